"""Optuna through Hydra's sweeper plugin: trials are child runs of one MLflow parent, studies resume and
are named after search, model and data, the best trial is re-run with its own overrides, hopeless trials
are pruned, every sampler is available."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from hydra_plugins.scratchlab_optuna_sweeper.search_space import distribution, grid_values
from scratchlab.config import CONFIG_DIR, compose
from scratchlab.resume import resume_command, setting_overrides
from scratchlab.sweeps import mixed_settings, replaced_by_search, rerun_overrides, run_overrides
from tests.conftest import run_cli, tiny_overrides, write_tiny_folder_dataset


def _sweep(tmp_path: Path, data: Path, *extra: str):
    overrides = [o for o in tiny_overrides(tmp_path, data) if not o.startswith(("hydra.run", "trainer.max_epochs"))]
    return run_cli("scratchlab.train", ["hparams_search=lr_wd", "trainer.max_epochs=1", *overrides, *extra],
                   cwd=tmp_path, timeout=600)


def _study_runs(tmp_path: Path, prefix: str):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    names = [e.name for e in MlflowClient().search_experiments() if e.name.startswith(prefix)]
    assert len(names) == 1, names
    return names[0], mlflow.search_runs(experiment_names=names)


def test_optuna_sweep_has_parent_with_child_trials_and_resumes(tmp_path: Path, tiny_dataset: Path) -> None:
    first = _sweep(tmp_path, tiny_dataset, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "best trial " in first.stdout and "optimizer.lr=" in first.stdout
    hint = next(line for line in first.stdout.splitlines() if "re-run it:" in line)
    assert "trainer.max_epochs=1" in hint and f"data.root={tiny_dataset}" in hint, "the user's overrides are kept"
    assert "hparams_search" not in hint and "optimizer.weight_decay=" in hint
    study, runs = _study_runs(tmp_path, "lr_wd-cnn-folder-")
    parents = runs[runs["tags.scratchlab.role"] == "sweep"]
    children = runs[runs["tags.scratchlab.role"] != "sweep"]
    assert len(parents) == 1 and len(children) == 3
    parent_id = parents.run_id.iloc[0]
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    assert children["params.optimizer.lr"].nunique() == 3, "each trial tries its own learning rate"
    assert sorted(children["tags.optuna.trial"]) == ["0", "1", "2"]
    storage = f"sqlite:///{tmp_path}/logs/optuna.db"
    assert len(optuna.load_study(study_name=study, storage=storage).trials) == 3

    second = _sweep(tmp_path, tiny_dataset, "hydra.sweeper.n_trials=1")  # the same command continues the study
    assert second.returncode == 0, second.stderr[-2000:]
    loaded = optuna.load_study(study_name=study, storage=storage)
    assert len(loaded.trials) == 4
    _, runs = _study_runs(tmp_path, "lr_wd-cnn-folder-")
    assert (runs["tags.mlflow.parentRunId"] == parent_id).sum() == 4
    parent = MlflowClient().get_run(parent_id)
    best = loaded.best_trial
    assert parent.data.tags["best.trial"] == str(best.number), "the parent shows the best of the whole study"
    assert float(parent.data.tags["best.optimizer.lr"]) == pytest.approx(best.params["optimizer.lr"])
    assert parent.data.metrics["best/val/f1_bad"] == pytest.approx(best.value)
    assert "mixes trials" not in second.stdout

    # continued with other settings; its one trial is pruned, so the best is a trial of the earlier sweeps
    third = _sweep(tmp_path, tiny_dataset, "hydra.sweeper.n_trials=1", "trainer.max_epochs=2", "optimizer.lr=0.5",
                   "hydra/sweeper/pruner=none", "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                   "+hydra.sweeper.pruner.lower=2.0")
    assert third.returncode == 0, third.stderr[-2000:]
    hint = next(line for line in third.stdout.splitlines() if "re-run it:" in line)
    assert "trainer.max_epochs=1" in hint and "trainer.max_epochs=2" not in hint, "the best trial's own settings"
    assert "optimizer.lr=0.5" not in hint
    stored = mlflow.artifacts.load_text(f"runs:/{parent_id}/best_trial_command.txt")
    assert stored.strip() == hint.split("re-run it: ", 1)[1]
    assert "warning: optimizer.lr=0.5 not used: the search space" in third.stdout
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert trials[-1].state == optuna.trial.TrialState.PRUNED and trials[-1].params["optimizer.lr"] != 0.5
    mixed = next(line for line in third.stdout.splitlines() if "mixes trials of different settings" in line)
    assert "earlier trials 0, 1, 2, 3 ran with [trainer.max_epochs=1] where this sweep has [trainer.max_epochs=2]" \
        in mixed


def _trial_run(sweep_dir: str, trial: int, overrides: list[str], output_dir: str = "") -> SimpleNamespace:
    tags = {"hydra.sweep_dir": sweep_dir, "optuna.trial": str(trial), "hydra.overrides": " ".join(overrides),
            "hydra.output_dir": output_dir}
    return SimpleNamespace(data=SimpleNamespace(tags=tags))


def test_resume_and_rerun_commands_repeat_what_counts_and_nothing_else() -> None:
    """Of an override given twice the last counts, in its place (a later ``a.b=3`` wins over ``a={b:2}``); an
    override with another prefix is another override (``+k=1`` then ``k=2`` is valid only as both)."""
    given = ["a.b=1", "+trainer.foo=1", "hydra.run.dir=out", "hydra/launcher=basic", "resume=abc", "ckpt_path=x.ckpt",
             "a={b:2}", "trainer.foo=2", "a.b=3", "+hparams_search=lr_wd", "~x", "optimizer.lr=0.1"]
    kept = ["+trainer.foo=1", "a={b:2}", "trainer.foo=2", "a.b=3", "~x"]
    assert setting_overrides(given) == [*kept, "optimizer.lr=0.1"]
    assert setting_overrides(given, leave_out={"optimizer.lr", "x"}) == kept[:-1]
    assert resume_command(given, "RUN") == ("python -m scratchlab.train +trainer.foo=1 'a={b:2}' trainer.foo=2 a.b=3 "
                                            "'~x' optimizer.lr=0.1 resume=RUN")


def test_rerun_command_and_warnings_use_each_trials_own_overrides(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    saved = ["optimizer.lr=0.1", "hparams_search=lr_wd", "+tags.note=two words", "trainer.max_epochs=2"]
    OmegaConf.save(OmegaConf.create(saved), job / ".hydra" / "overrides.yaml")
    assert run_overrides(_trial_run("a", 0, saved, str(job))) == saved, "Hydra's own list, not the joined tag"
    assert run_overrides(_trial_run("a", 0, ["seed=1"], str(tmp_path / "gone"))) == ["seed=1"]
    assert rerun_overrides([*saved, "trainer.max_epochs=3"], {"optimizer.lr": 0.2}) == [
        "+tags.note=two words", "trainer.max_epochs=3", "optimizer.lr=0.2"], "the last of a key given twice"
    runs = [_trial_run("now", 2, ["optimizer.lr=0.3", "trainer.max_epochs=1"]),
            _trial_run("before", 1, ["optimizer.lr=0.2", "trainer.max_epochs=2"]),
            _trial_run("before", 0, ["optimizer.lr=0.1", "trainer.max_epochs=1"])]
    mixed = mixed_settings(runs, ["trainer.max_epochs=1"], "now", {"optimizer.lr"})
    assert mixed == ("warning: the study mixes trials of different settings: earlier trials 1 ran with "
                     "[trainer.max_epochs=2] where this sweep has [trainer.max_epochs=1]")
    assert mixed_settings(runs[::2], ["trainer.max_epochs=1"], "now", {"optimizer.lr"}) is None
    given = ["optimizer.lr=1e-3", "optimizer.weight_decay=1e-4,1e-3", "seed=1", "+hydra.job.env_set.X=1"]
    assert replaced_by_search(given, ["optimizer.lr", "optimizer.weight_decay"]) == ["optimizer.lr=1e-3"]


def test_a_trial_returns_its_best_checkpoints_metric_without_logging_another_epoch(tmp_path: Path,
                                                                                   tiny_dataset: Path) -> None:
    """A trial validates its best checkpoint again for the sweeper: that value is returned and logged as
    ``best/val/*``, not as one more point of its curves. (The checkpoint here keeps the highest validation loss,
    so the best epoch is not the last one.)"""
    from scratchlab.training import run_training

    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("trainer.max_epochs")]
    metrics = run_training(compose("train", [*overrides, "trainer.max_epochs=3", "callbacks=no_early_stopping",
                                             "callbacks.model_checkpoint.mode=max", "optimized_metric=val/loss",
                                             "test_after_fit=false"]))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("scratchlab").experiment_id])[0]
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert len(history) == 3, history
    assert metrics["val/loss"] == pytest.approx(max(history), abs=1e-6) != history[-1], "the best checkpoint's"
    assert run.data.metrics["best/val/loss"] == pytest.approx(metrics["val/loss"], abs=1e-9)


def test_hopeless_trials_are_pruned_and_keep_their_curve(tmp_path: Path, tiny_dataset: Path) -> None:
    # a threshold no F1 reaches: every trial is pruned at its first report
    result = _sweep(tmp_path, tiny_dataset, "hydra.sweeper.n_trials=2", "trainer.max_epochs=3",
                    "hydra/sweeper/pruner=none", "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                    "+hydra.sweeper.pruner.lower=2.0")
    assert result.returncode == 0, result.stderr[-2000:]
    study, runs = _study_runs(tmp_path, "lr_wd-cnn-folder-")
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/logs/optuna.db").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    children = runs[runs["tags.scratchlab.role"] != "sweep"]
    assert len(children) == 2 and set(children["tags.pruned"]) == {"true"} and set(children["status"]) == {"FINISHED"}
    client = MlflowClient()
    for run_id in children.run_id:
        history = client.get_metric_history(run_id, "val/f1_bad")
        assert len(history) == 1, "stopped after the first of three epochs, with that epoch's metrics"
        assert "test/acc" not in client.get_run(run_id).data.metrics


def test_grid_sampler_walks_the_grid(tmp_path: Path, tiny_dataset: Path) -> None:
    result = _sweep(tmp_path, tiny_dataset, "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=grid",
                    "hydra/sweeper/pruner=none", "hydra.sweeper.params=null",
                    "optimizer.lr=0.001,0.01")  # a sweep on the command line joins the search space
    assert result.returncode == 0, result.stderr[-2000:]
    _, runs = _study_runs(tmp_path, "lr_wd-cnn-folder-")
    tried = sorted(float(v) for v in runs["params.optimizer.lr"].dropna())
    assert tried == [0.001, 0.01]


def _study_name(root: Path, *overrides: str) -> str:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"paths.root_dir={root}", "hparams_search=lr_wd", *overrides],
                            return_hydra_config=True)
    return str(cfg.hydra.sweeper.study_name)


def test_study_name_tells_search_model_and_data_apart(tmp_path: Path) -> None:
    one = write_tiny_folder_dataset(tmp_path / "one", n_good=2, n_bad=2)
    two = write_tiny_folder_dataset(tmp_path / "two", n_good=2, n_bad=2)
    base = _study_name(tmp_path, "data=folder", f"data.root={one}")
    assert base.startswith("lr_wd-cnn-folder-")
    assert _study_name(tmp_path, "data=folder", f"data.root={one}", "data.num_workers=3") == base
    assert _study_name(tmp_path, "data=folder", f"data.root={two}") != base, "other data, other study"
    assert _study_name(tmp_path, "data=folder", f"data.root={one}", "model=mobilenetv2").startswith("lr_wd-mobilenetv2_100-folder-")


@pytest.mark.parametrize(("line", "kind", "low", "high", "log"), [
    ("x=interval(0.1, 0.5)", optuna.distributions.FloatDistribution, 0.1, 0.5, False),
    ("x=tag(log, interval(1e-5, 1e-2))", optuna.distributions.FloatDistribution, 1e-5, 1e-2, True),
    ("x=int(interval(1, 400))", optuna.distributions.IntDistribution, 1, 400, False),
    ("x=range(2, 10, 2)", optuna.distributions.IntDistribution, 2, 8, False),  # stop excluded, as in Hydra
])
def test_search_space_strings_become_distributions(line, kind, low, high, log) -> None:
    dist = distribution(OverridesParser.create().parse_overrides([line])[0])
    assert isinstance(dist, kind) and (dist.low, dist.high, dist.log) == (low, high, log)


def test_choices_are_categorical_and_intervals_have_no_grid() -> None:
    parser = OverridesParser.create()
    choice = parser.parse_overrides(["model=cnn,mobilenetv2"])[0]
    assert distribution(choice).choices == ("cnn", "mobilenetv2")
    assert grid_values(parser.parse_overrides(["x=range(0, 3)"])[0]) == [0, 1, 2]
    with pytest.raises(ValueError, match="grid sampler"):
        grid_values(parser.parse_overrides(["x=interval(0, 1)"])[0])


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes"])
def test_every_sampler_and_pruner_config_builds(tmp_path: Path, sampler: str) -> None:
    from hydra.utils import instantiate

    from hydra_plugins.scratchlab_optuna_sweeper.config import PRUNERS, SAMPLERS

    node = dict(SAMPLERS[sampler])
    if sampler == "grid":
        node["search_space"] = {"x": [1, 2]}
    assert isinstance(instantiate(node), optuna.samplers.BaseSampler)
    for pruner in PRUNERS.values():
        assert isinstance(instantiate(pruner), optuna.pruners.BasePruner)


def test_search_configs_compose(tmp_path: Path) -> None:
    for name in ("lr_wd", "threshold"):
        cfg = compose("train", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", f"hparams_search={name}"])
        assert cfg.optimized_metric == "val/f1_bad"
    cfg = compose("evaluate", [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r", "run_id=abc",
                               "hparams_search=eval_threshold"])
    assert cfg.split == "val" and cfg.optimized_metric == "val/f1_bad", "thresholds are tuned on validation"
    assert OmegaConf.is_config(cfg)
