"""MLflow tracking: one run per training job, created before training and always closed with a status.

Where runs go: ``MLFLOW_TRACKING_URI`` when set, else ``logger.tracking_uri``, else a SQLite store in
``mlruns/mlflow.db`` with artifacts beside it in ``mlruns/artifacts``. A Hydra multirun logs all its jobs
into one experiment, named after the sweep folder (or the Optuna study).
"""
from __future__ import annotations

import logging
import os
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from hydra_plugins.scratchlab_optuna_sweeper.trial_handoff import TRIAL_NUMBER_ENV
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from scratchlab.config import resolve_tracking_uri, ui_command

from scratchlab.models.weights import weights_source

log = logging.getLogger(__name__)
RUN_ID_ENV = "SCRATCHLAB_MLFLOW_RUN_ID"  # lets DDP worker processes join the run of the main process
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ROLE_TAG = "scratchlab.role"
RUN_CONTROL_KEYS = ("ckpt_path", "resume")  # how a run was started, not what it trains: never params
PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass
class TrackedRun:
    """An open MLflow run: its client, ids and where to find it."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step or 0)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    @property
    def ui_hint(self) -> str:
        uri = self.tracking_uri
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"{ui_command(uri)}  (experiment {self.experiment_name!r}, run {self.run_id})"


def git_info(path: Path = PROJECT_DIR) -> dict[str, str]:
    """Commit and dirty flag of the project checkout, empty when it is not a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()}


def _hydra_context() -> dict[str, Any]:
    """Multirun sweep folder and job number, overrides; empty outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    out = {"overrides": " ".join(hc.overrides.task), "output_dir": hc.runtime.output_dir}
    if hc.mode == RunMode.MULTIRUN:
        out.update(sweep_dir=hc.sweep.dir, job_num=hc.job.num, study=hc.sweeper.get("study_name") or "")
    return out


def experiment_name(cfg: DictConfig, context: Mapping[str, Any]) -> str:
    """``cfg.name`` for a single run; for every job of one multirun ``<name>-multirun-<sweep folder>``,
    or the Optuna study name, so that a resumed study keeps logging into the same experiment."""
    if context.get("study"):
        return str(context["study"])
    if "sweep_dir" in context:
        return f"{cfg.name}-multirun-{Path(context['sweep_dir']).name}"
    return str(cfg.name)


def sweep_parent_run(client: MlflowClient, experiment_id: str, name: str) -> str:
    """The one parent run that groups the jobs of a sweep experiment (created on first use)."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={ROLE_TAG: "sweep", **git_info()})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def tracking_uri(cfg: DictConfig) -> str:
    """The store runs go to: ``MLFLOW_TRACKING_URI``, then ``logger.tracking_uri``, then the SQLite store in
    ``paths.mlruns_dir``. A local SQLite store gets its folder created."""
    uri = resolve_tracking_uri(cfg.logger.get("tracking_uri"), cfg.paths.mlruns_dir)
    db = sqlite_path(uri)
    if db is None:
        return uri
    _ensure_sqlite_store(db)
    # runs that write to one SQLite store at the same time wait for each other's locks (60 s, not 5 s)
    return uri if "?" in uri else f"{uri}?timeout=60"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query left out), else None."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


_READY_STORES: set[Path] = set()


def _ensure_sqlite_store(db: Path) -> None:
    """Create (and migrate) a SQLite store once, under a file lock: runs started together on a new store
    would otherwise run MLflow's schema migrations at the same time and fail."""
    db = db.resolve()
    if db in _READY_STORES:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no POSIX locks (Windows): start runs on a new store one at a time
            pass
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    _READY_STORES.add(db)


def _default_artifact_root(uri: str) -> Path | None:
    """Artifacts of a SQLite store live beside its database, where ``mlflow ui`` on that store finds them."""
    db = sqlite_path(uri)
    return db.resolve().parent / "artifacts" if db is not None else None


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """The id of experiment ``name``; a new one stores its artifacts under ``artifact_root`` (default: beside
    a SQLite store; a server's own artifact store otherwise)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = Path(artifact_root).resolve() if artifact_root else _default_artifact_root(client.tracking_uri)
    location = (root / name).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location)


def _open_run(client: MlflowClient, cfg: DictConfig, uri: str) -> TrackedRun:
    """A new run for this job, in the experiment of its run or sweep."""
    context = _hydra_context()
    name = experiment_name(cfg, context)
    exp_id = get_or_create_experiment(client, name, cfg.logger.get("artifact_root"))
    tags = {"mlflow.runName": cfg.run_name, "mlflow.source.name": "scratchlab.train", **git_info(),
            "model": cfg.model.name, "data": cfg.data.name, "task": cfg.model.get("task", "classification"),
            "weights_source": weights_source(cfg.model),
            **{f"hydra.{k}": str(v) for k, v in context.items()},
            **{str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}}
    if "sweep_dir" in context:
        tags["mlflow.parentRunId"] = sweep_parent_run(client, exp_id, name)
    if os.environ.get(TRIAL_NUMBER_ENV):
        tags["optuna.trial"] = os.environ[TRIAL_NUMBER_ENV]
    run = client.create_run(exp_id, run_name=cfg.run_name, tags=tags)
    return TrackedRun(client, run.info.run_id, exp_id, name, uri)


def _reopen_run(client: MlflowClient, run_id: str, uri: str) -> TrackedRun:
    """An earlier (interrupted) run, set RUNNING again to continue its epochs and metric history."""
    run = client.get_run(run_id)
    exp = client.get_experiment(run.info.experiment_id)
    client.update_run(run_id, status="RUNNING")
    resumes = int(run.data.tags.get("resumed", "0")) + 1
    client.set_tag(run_id, "resumed", str(resumes))
    return TrackedRun(client, run_id, exp.experiment_id, exp.name, uri)


@contextmanager
def _tracking_uri_kept() -> Iterator[None]:
    """Put back the process-wide tracking URI as it was. Lightning's ``MLFlowLogger`` sets it to its run's store
    with ``mlflow.set_tracking_uri``, which also sets ``MLFLOW_TRACKING_URI``; left so, the next run in the same
    Python session (a notebook's) would take that for the user's choice and log into the earlier run's store."""
    before = os.environ.get(TRACKING_URI_ENV)
    try:
        yield
    finally:
        if os.environ.get(TRACKING_URI_ENV) != before:
            mlflow.set_tracking_uri(before)  # None: neither set


@contextmanager
def mlflow_run(cfg: DictConfig, resume_run_id: str | None = None) -> Iterator[TrackedRun]:
    """Open the run of this job (``resume_run_id``: continue that run; in a DDP worker: join the main
    process's run) and always close it; the process-wide tracking URI is left as it was.

    An exception marks the run FAILED (KILLED for Ctrl-C and SIGTERM) and stores the traceback as
    ``error.txt``; an Optuna trial pruned on the way is FINISHED and tagged ``pruned``.
    """
    with _tracking_uri_kept(), _opened_run(cfg, resume_run_id) as run:
        yield run


@contextmanager
def _opened_run(cfg: DictConfig, resume_run_id: str | None) -> Iterator[TrackedRun]:
    """``mlflow_run`` without the tracking URI's restore."""
    from scratchlab.resume import Interrupted

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    joined = os.environ.get(RUN_ID_ENV)
    if joined:
        run = client.get_run(joined)
        exp = client.get_experiment(run.info.experiment_id)
        yield TrackedRun(client, joined, exp.experiment_id, exp.name, uri)
        return
    tracked = _reopen_run(client, resume_run_id, uri) if resume_run_id else _open_run(client, cfg, uri)
    os.environ[RUN_ID_ENV] = tracked.run_id
    try:
        tracked.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
        yield tracked
    except BaseException as err:
        if is_pruned(err):  # an Optuna trial stopped early: its curve so far is the result
            tracked.set_tags({"pruned": "true"})
            _end_run(client, tracked.run_id, "FINISHED")
            raise
        status = "KILLED" if isinstance(err, (KeyboardInterrupt, Interrupted)) else "FAILED"
        try:
            tracked.log_text("".join(traceback.format_exception(err)), "error.txt")
        finally:
            _end_run(client, tracked.run_id, status)
        raise
    else:
        _end_run(client, tracked.run_id, "FINISHED")
    finally:
        os.environ.pop(RUN_ID_ENV, None)


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    """Write what is still queued (training logs its metrics without waiting: ``synchronous=False``),
    then close the run."""
    mlflow.flush_async_logging()
    client.set_terminated(run_id, status)


def new_params(run: TrackedRun, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params a (resumed) run does not hold yet; MLflow keeps the first value of a param. A changed
    value is noted as a ``resumed.<key>`` tag."""
    held = run.client.get_run(run.run_id).data.params
    for key, value in params.items():
        if key in held and held[key] != str(value):
            run.client.set_tag(run.run_id, f"resumed.{key}", str(value))
    return {k: v for k, v in params.items() if k not in held}


def is_pruned(err: BaseException) -> bool:
    """Whether ``err`` is Optuna's signal that a trial was pruned."""
    import optuna

    return isinstance(err, optuna.TrialPruned)


def flatten_config(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """Dotted keys -> leaf values of the config, resolved unless ``resolve=False`` (lists kept as one value)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=resolve), "")
    for key in RUN_CONTROL_KEYS:
        out.pop(key, None)
    return out
