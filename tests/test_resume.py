"""Interrupt and resume: SIGTERM / Ctrl-C leave a KILLED run with last.ckpt logged and exit 143 / 130;
resume=RUN_ID continues the same MLflow run and ends where an uninterrupted run ends; concurrent runs
share only the MLflow store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import logging
import time
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning.trainer.connectors import signal_connector

from scratchlab.config import compose
from scratchlab.resume import Interrupted, defer_interrupts, release_interrupts, signals_interrupt
from scratchlab.training import run_training
from tests.conftest import cli_env, run_cli, tiny_overrides

EPOCHS = 6


def _overrides(root: Path, data: Path, run_dir: str) -> list[str]:
    return [*tiny_overrides(root, data, run_dir), f"trainer.max_epochs={EPOCHS}", "callbacks=no_early_stopping",
            "callbacks.progress_bar.refresh_rate=0"]


def _interrupt_after_first_epoch(root: Path, data: Path, signum: int, *extra: str,
                                 group: bool = False) -> subprocess.CompletedProcess:
    """Signal a training after its first epoch: its process alone, or (``group``) its whole process group, as a
    terminal's Ctrl-C or ``timeout`` do, loader workers included."""
    args = [sys.executable, "-m", "scratchlab.train", *_overrides(root, data, "interrupted"), *extra]
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=group)
    last = root / "logs" / "interrupted" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _only_run(root: Path):
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("scratchlab").experiment_id])
    assert len(runs) == 1
    return runs[0]


def _assert_killed_with_last_checkpoint(result: subprocess.CompletedProcess, root: Path, code: int):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "resume=" in result.stderr
    run = _only_run(root)
    assert run.info.status == "KILLED"
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/last.ckpt" in logged
    assert Path(run.data.tags["last_checkpoint"]).is_file()
    return run


def test_ctrl_c_leaves_killed_run_with_last_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    result = _interrupt_after_first_epoch(tmp_path, tiny_dataset, signal.SIGINT)
    _assert_killed_with_last_checkpoint(result, tmp_path, 130)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_process_group_with_loader_workers_is_an_interrupt(tmp_path: Path, tiny_dataset: Path,
                                                                            signum: int, code: int) -> None:
    """The workers get the signal too; they leave it to the main process instead of dying mid-batch (which
    made the run FAILED, with no last.ckpt logged)."""
    result = _interrupt_after_first_epoch(tmp_path, tiny_dataset, signum, "data.num_workers=2", group=True)
    _assert_killed_with_last_checkpoint(result, tmp_path, code)


def test_resume_with_other_settings_is_refused_and_the_run_stays_killed(tmp_path: Path, tiny_dataset: Path) -> None:
    """The printed command continues the run with its own overrides; other settings would mix two experiments in
    one history: one error line naming them and that command, and the run stays KILLED."""
    interrupted = _interrupt_after_first_epoch(tmp_path, tiny_dataset, signal.SIGTERM)
    run_id = _assert_killed_with_last_checkpoint(interrupted, tmp_path, 143).info.run_id
    hint = next(line.split("   (or")[0].strip() for line in interrupted.stderr.splitlines() if f"resume={run_id}" in line)
    assert "model.image_size=32" in hint and "data=folder" in hint and "hydra.run.dir" not in hint
    other = [o.replace("model.image_size=32", "model.image_size=48") for o in _overrides(tmp_path, tiny_dataset, "b")]
    refused = run_cli("scratchlab.train", [*other, f"resume={run_id}"], cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "model.image_size=48 (the run: 32)" in error[0] and hint in error[0]
    assert _only_run(tmp_path).info.status == "KILLED"
    allowed = run_cli("scratchlab.train", [*_overrides(tmp_path, tiny_dataset, "c"), "data.num_workers=1",
                                           f"resume={run_id}"], cwd=tmp_path, timeout=600)
    assert allowed.returncode == 0, allowed.stderr[-2000:]  # loading parallelism may change
    assert _only_run(tmp_path).info.status == "FINISHED"


@pytest.mark.parametrize(("loading", "every"), [
    (["data.num_workers=0"], 1),
    (["data.num_workers=2"], 1),
    (["data.num_workers=0", "+trainer.check_val_every_n_epoch=2", "scheduler=cosine"], 2),
], ids=["in-process loading", "2 loader workers", "validation every 2 epochs"])
def test_resume_continues_the_run_and_matches_an_uninterrupted_one(tmp_path: Path, tiny_dataset: Path,
                                                                   loading: list[str], every: int) -> None:
    """Also with loader workers, which draw the resumed epoch's first batches before Lightning sets its epoch,
    and with validation every other epoch, interrupted after the first epoch, which ran none (its last.ckpt is
    written at the epoch's end, not at a validation's)."""
    interrupted = _interrupt_after_first_epoch(tmp_path, tiny_dataset, signal.SIGTERM, *loading)
    run_id = _assert_killed_with_last_checkpoint(interrupted, tmp_path, 143).info.run_id
    resumed = run_cli("scratchlab.train", [*_overrides(tmp_path, tiny_dataset, "resumed"), *loading, f"resume={run_id}"],
                      cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = _only_run(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    straight_root = tmp_path / "straight"
    straight_root.mkdir()
    straight = run_cli("scratchlab.train", [*_overrides(straight_root, tiny_dataset, "straight"), *loading],
                       cwd=straight_root, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = _only_run(straight_root)

    def curve(root: Path, run_id: str) -> list[tuple[int, float]]:
        client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/loss"))

    resumed_curve, straight_curve = curve(tmp_path, run.info.run_id), curve(straight_root, reference.info.run_id)
    assert len(resumed_curve) == EPOCHS // every, "each validation in the same run, none repeated or lost"
    assert [s for s, _ in resumed_curve] == [s for s, _ in straight_curve]
    assert [v for _, v in resumed_curve] == pytest.approx([v for _, v in straight_curve], abs=1e-6)
    for key in ("test/acc", "test/auroc", "test/loss"):
        assert run.data.metrics[key] == pytest.approx(reference.data.metrics[key], abs=1e-6), key


class SignalAfterValidation(pl.Callback):
    """Sends this process SIGTERM once epoch ``epoch``'s validation metrics are logged, before its ``last.ckpt``
    is written (checkpoint callbacks run after every other one)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupt_between_logged_metrics_and_checkpoint_waits_for_the_checkpoint(tmp_path: Path,
                                                                                      tiny_dataset: Path) -> None:
    """Epoch 1's validation is logged when the signal lands: the run stops only once epoch 1's last.ckpt is
    written, so the resumed run neither repeats that validation nor loses one."""
    overrides = [*_overrides(tmp_path, tiny_dataset, "interrupted"),
                 f"+callbacks.signal._target_={__name__}.SignalAfterValidation", "+callbacks.signal.epoch=1"]
    with pytest.raises(Interrupted):
        run_training(compose("train", overrides))
    run = _only_run(tmp_path)
    last = Path(run.data.tags["last_checkpoint"])
    assert run.info.status == "KILLED" and torch.load(last, weights_only=True)["epoch"] == 1
    run_training(compose("train", [*overrides, f"resume={run.info.run_id}"]))
    history = MlflowClient().get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == len({m.step for m in history}) == EPOCHS


def test_an_interrupt_waits_while_deferred_and_a_second_one_does_not() -> None:
    with signals_interrupt():
        defer_interrupts()
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Interrupted) as waited:
            release_interrupts()
        assert waited.value.exit_code == 143
        defer_interrupts()
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted) as second:
            os.kill(os.getpid(), signal.SIGTERM)
        assert second.value.exit_code == 143
        release_interrupts()  # nothing waits any more


def test_lightning_logs_nothing_from_its_sigterm_handler() -> None:
    """Logging from a signal handler that lands while the same log file is written fails with 're-entrant call'
    and a traceback; with scratchlab's handlers in place, Lightning's handler does not log."""
    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append
    lightning_log = logging.getLogger(signal_connector.__name__)
    lightning_log.addHandler(collect)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    try:
        with signals_interrupt():
            trainer._signal_connector.register_signal_handlers()
            try:
                with pytest.raises(Interrupted):
                    os.kill(os.getpid(), signal.SIGTERM)
            finally:
                trainer._signal_connector.teardown()
        lightning_log.info("after the block")
    finally:
        lightning_log.removeHandler(collect)
    assert [r.getMessage() for r in records] == ["after the block"]


def test_concurrent_runs_share_only_the_mlflow_store(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("hydra.run.dir")]
    procs = [subprocess.Popen([sys.executable, "-m", "scratchlab.train", *overrides, "trainer.max_epochs=1",
                               f"seed={seed}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env()) for seed in range(4)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-1500:] for _, err in results]
    folders = sorted((tmp_path / "logs" / "runs").iterdir())
    assert len(folders) == 4, "one folder per run, even when started in the same second"
    for folder in folders:
        assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / ".hydra" / "config.yaml").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("scratchlab").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    for run in runs:
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"training_curves.png", "split.csv", "config", "checkpoints"} <= files
        assert run.data.tags["hydra.output_dir"] in {str(f) for f in folders}


@pytest.mark.parametrize("extra", [["callbacks.model_checkpoint.mode=max"], ["+trainer.check_val_every_n_epoch=2"]],
                         ids=["epochs that did not improve", "an epoch without validation"])
def test_last_checkpoint_holds_the_last_finished_epoch(tmp_path: Path, tiny_dataset: Path, extra: list[str]) -> None:
    """last.ckpt is what an interrupted run continues from: the last finished epoch, not the last best one,
    nor the last validated one."""
    import torch

    from scratchlab.config import compose
    from scratchlab.training import run_training

    # mode=max on the validation loss: the first epoch is the best, every later one is not;
    # validation every 2 epochs: the third epoch (index 2) runs none
    run_training(compose("train", [*tiny_overrides(tmp_path, tiny_dataset), "trainer.max_epochs=3",
                                   "callbacks=no_early_stopping", *extra]))
    folder = tmp_path / "logs" / "run" / "checkpoints"
    epochs = {name: torch.load(folder / name, map_location="cpu", weights_only=True)["epoch"]
              for name in ("best.ckpt", "last.ckpt")}
    assert epochs["best.ckpt"] < 2 and epochs["last.ckpt"] == 2, epochs


def test_a_resumed_run_does_not_rewrite_the_checkpoint_it_resumed_from(tmp_path: Path, tiny_dataset: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With validation every 2 epochs, last.ckpt is written at a validation's end and Lightning replays that epoch's
    end on resume: last.ckpt must not be written again then (it would hold the resumed process's random state)."""
    from scratchlab.callbacks import EpochCheckpoint
    from scratchlab.config import compose
    from scratchlab.training import run_training

    steps: list[int] = []
    save = EpochCheckpoint._save_last_checkpoint

    def spy(self: EpochCheckpoint, trainer, candidates) -> None:
        steps.append(trainer.global_step)
        save(self, trainer, candidates)

    monkeypatch.setattr(EpochCheckpoint, "_save_last_checkpoint", spy)
    overrides = [*tiny_overrides(tmp_path, tiny_dataset), "callbacks=no_early_stopping",
                 "+trainer.check_val_every_n_epoch=2"]
    run_training(compose("train", [*overrides, "trainer.max_epochs=2"]))
    first, steps[:] = list(steps), []
    last = tmp_path / "logs" / "run" / "checkpoints" / "last.ckpt"
    run_training(compose("train", [*overrides, "trainer.max_epochs=3", f"ckpt_path={last}"]))
    assert len(first) == 2 and steps == [2 * first[1] - first[0]], (first, steps)  # the new epoch's end only
