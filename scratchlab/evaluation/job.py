"""The job behind ``python -m scratchlab.evaluate``: one MLflow evaluation run per call (or multirun job).

1. find the model: ``ckpt=PATH``, or ``run_id=RUN`` (its ``best_checkpoint`` file, else its
   ``checkpoints/*.ckpt`` artifact, downloaded once; two_stage runs are rebuilt from their config);
2. build the evaluation data config: the run's own ``data`` (from the checkpoint), a ``data=OPTION`` composed
   in its place, or ``+data.KEY=VALUE`` tweaks merged onto the run's own;
3. decision thresholds: run config < operating point stored in the checkpoint < ``decision.*`` given on the
   command line; ``choose=target_recall|best_f1`` picks new ones on the validation split and stores them
   with the model;
4. predictions come from the cache (the network runs on a miss only), metrics from the predictions;
5. everything goes into a NEW MLflow run, a child of the evaluated run when that is known.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from scratchlab.checkpoints import write_operating_point
from scratchlab.config import require_complete
from scratchlab.config_schema import unknown_partial_data_settings
from scratchlab.data.transforms import Preprocess
from scratchlab.errors import ConfigError
from scratchlab.evaluation.cache import ModelSource, Predictions, get_predictions
from scratchlab.evaluation.operating_point import (
    check_method,
    choice_xlabel,
    decision_values,
    operating_point_on,
    threshold_figure,
)
from scratchlab.postprocess import DecisionParams, given_overrides, resolve_decision
from scratchlab.tracking import flatten_config, get_or_create_experiment, git_info, tracking_uri

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LOG_PREDICTIONS = ("once", "always", "never")
CACHE_ARTIFACT_DIR = "prediction_cache"
DEFAULT_EXPERIMENT = "evaluate"
MAX_PARAM = 6000


# ----------------------------------------------------------------------------------------------------------
# Decision values


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def decision_label(params: DecisionParams, maps: bool) -> str:
    """``threshold=0.3`` for classifiers; ``mask_threshold=0.5-min_area=12`` (+ non-default extras) for models
    with probability maps (``maps``)."""
    if not maps:
        return f"threshold={_fmt(params.threshold)}"
    area = (f"min_area_ratio={_fmt(params.min_area_ratio)}" if params.min_area_ratio is not None
            else f"min_area={_fmt(params.min_area)}")
    parts = [f"mask_threshold={_fmt(params.mask_threshold)}", area]
    if params.min_component_area:
        parts.append(f"min_component_area={params.min_component_area}")
    if params.area_mode != "sum":
        parts.append(f"area_mode={params.area_mode}")
    if params.score_top_k != 1:
        parts.append(f"score_top_k={params.score_top_k}")
    return "-".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Finding the model


@dataclass
class Target:
    """What is evaluated: the model, the MLflow run it came from (if known) and where its checkpoint lives."""

    source: ModelSource
    run: Any | None = None
    checkpoint_from_run: bool = False


def _get_run(client: MlflowClient, run_id: str, uri: str) -> Any:
    try:
        return client.get_run(str(run_id))
    except MlflowException as err:
        raise ConfigError(f"run_id={run_id} is not a run in {uri}; check the id, or logger.tracking_uri") from err


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    try:
        infos = client.list_artifacts(run_id, path)
    except (MlflowException, OSError):
        return []
    out: list[str] = []
    for info in infos:
        out += _artifact_files(client, run_id, info.path) if info.is_dir else [info.path]
    return out


def _run_checkpoint(client: MlflowClient, run: Any, cfg: DictConfig) -> Path | None:
    """The run's checkpoint: its ``best_checkpoint`` file when present here, else its artifact (downloaded once)."""
    tagged = run.data.tags.get("best_checkpoint")
    if tagged and Path(tagged).is_file():
        return Path(tagged)
    ckpts = [p for p in _artifact_files(client, run.info.run_id, "checkpoints") if p.endswith(".ckpt")]
    if not ckpts:
        return None
    artifact = "checkpoints/best.ckpt" if "checkpoints/best.ckpt" in ckpts else sorted(ckpts)[0]
    local_dir = Path(cfg.paths.log_dir) / "checkpoints" / run.info.run_id
    local = local_dir / Path(artifact).name
    if not local.is_file():
        local_dir.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s of run %s", artifact, run.info.run_id)
        got = client.download_artifacts(run.info.run_id, artifact, str(local_dir / ".download"))
        Path(got).replace(local)
    return local


def _run_for_checkpoint(client: MlflowClient, path: Path) -> Any | None:
    """The one run whose ``best_checkpoint`` tag is this file, if any (so ``ckpt=`` evaluations nest too)."""
    if "'" in str(path):
        return None
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, f"tags.best_checkpoint = '{path}'", max_results=2) if ids else []
    except MlflowException:
        return None
    return runs[0] if len(runs) == 1 else None


def find_target(cfg: DictConfig, client: MlflowClient, uri: str, source: ModelSource | None = None) -> Target:
    """The model of ``ckpt=`` (``source`` when already read) or ``run_id=``, and its MLflow run if known."""
    if not cfg.get("run_id") and not cfg.get("ckpt"):
        raise ConfigError("nothing to evaluate: give run_id=<MLflow run id> or ckpt=<path to a .ckpt>")
    run = _get_run(client, cfg.run_id, uri) if cfg.get("run_id") else None
    if cfg.get("ckpt"):
        path = Path(str(cfg.ckpt)).expanduser().resolve()
        source = source or ModelSource.from_checkpoint(path)
        if run is None and cfg.get("link_run", True):
            run = _run_for_checkpoint(client, path)
            return Target(source, run, checkpoint_from_run=run is not None)
        return Target(source, run, checkpoint_from_run=False)
    path = _run_checkpoint(client, run, cfg)
    if path is not None:
        return Target(ModelSource.from_checkpoint(path), run, checkpoint_from_run=True)
    from scratchlab.tasks import TASK_CLASSES

    trains_nothing = not getattr(TASK_CLASSES.get(run.data.tags.get("task", "")), "needs_training", True)
    if trains_nothing and "config/config.yaml" in _artifact_files(client, run.info.run_id, "config"):
        text = client.download_artifacts(run.info.run_id, "config/config.yaml", str(Path(cfg.paths.log_dir) / "tmp"))
        return Target(ModelSource.from_config(OmegaConf.to_container(OmegaConf.load(text), resolve=True)), run)
    raise ConfigError(f"run {run.info.run_id} has no checkpoint (no best_checkpoint file here and no "
                      "checkpoints/*.ckpt artifact); give ckpt=PATH")


# ----------------------------------------------------------------------------------------------------------
# The evaluation config


def evaluation_config(source: ModelSource, cfg: DictConfig) -> DictConfig:
    """The run's config with this machine's ``paths`` and the evaluation ``data``: the run's own, a composed
    ``data=OPTION`` (has a ``source``) in its place, or partial ``+data.KEY=VALUE`` values merged onto it.
    A composed option resizes images as the model was trained to, unless it sets ``data.resize`` itself; a
    preprocessing other than the model's is an error."""
    run_cfg = OmegaConf.create(source.config)
    with open_dict(run_cfg):
        run_cfg.paths = OmegaConf.create(OmegaConf.to_container(cfg.paths, resolve=True))
        data = cfg.get("data")
        if data is not None:
            node = OmegaConf.to_container(data, resolve=False)
            if "source" in node:
                if OmegaConf.is_interpolation(data, "resize"):  # the option's default, not a value given
                    node["resize"] = source.spec.preprocess.resize
                run_cfg.data = node
            else:
                if problems := unknown_partial_data_settings(node, run_cfg.data):
                    raise ConfigError("; ".join(problems))
                run_cfg.data = OmegaConf.merge(run_cfg.data, node)
        if str(cfg.split) != "train" and run_cfg.data.get("synthetic_fraction"):
            run_cfg.data.synthetic_fraction = 0.0  # synthetic images join the train split only: skip making them
    require_complete(run_cfg)
    wanted, got = source.spec.preprocess, Preprocess.from_run_config(run_cfg)
    if (got.image_size, got.resize) != (wanted.image_size, wanted.resize):
        raise ConfigError(f"data={run_cfg.data.name} prepares images with image_size={got.image_size}, "
                          f"resize={got.resize}, but the model was trained on image_size={wanted.image_size}, "
                          f"resize={wanted.resize}; drop data.resize (or set data.resize={wanted.resize})")
    return run_cfg


# ----------------------------------------------------------------------------------------------------------
# MLflow


def _hydra_tags() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    out = {"hydra.overrides": " ".join(hc.overrides.task)}
    try:
        out["hydra.output_dir"] = str(hc.runtime.output_dir)
    except Exception:  # noqa: BLE001 - not set outside an app
        pass
    if hc.mode == RunMode.MULTIRUN:
        out.update({"hydra.sweep_dir": str(hc.sweep.dir), "hydra.job_num": str(hc.job.num)})
    return out


def artifact_tag(key: str) -> str:
    """The tag a run carries when it holds the prediction cache ``key`` as an artifact."""
    return f"scratchlab.prediction_artifact.{key}"


def _search_all(client: MlflowClient, filter_string: str, max_results: int = 1) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, filter_string, max_results=max_results)) if ids else []


def _cache_fetcher(client: MlflowClient) -> Any:
    """``fetch(key, path)`` for ``get_predictions``: a cache file some evaluation run logged as an artifact."""

    def fetch(key: str, path: Path) -> bool:
        artifact = f"{CACHE_ARTIFACT_DIR}/{key}.npz"
        try:
            holders = _search_all(client, f"tags.`{artifact_tag(key)}` = '{artifact}'")
            if not holders:
                return False
            tmp = path.parent / f".{key}-download"
            local = Path(client.download_artifacts(holders[0].info.run_id, artifact, str(tmp)))
            local.replace(path)
            log.info("prediction cache %s taken from run %s", key, holders[0].info.run_id)
            return True
        except (MlflowException, OSError) as err:
            log.warning("could not fetch the prediction cache from MLflow (%s); running the model", err)
            return False

    return fetch


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(str(k)[:250], (str(v) if v is not None else "None")[:MAX_PARAM]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def _log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    for key, value in metrics.items():
        if value is not None and not math.isnan(value):
            client.log_metric(run_id, key, float(value))


def _log_json(client: MlflowClient, run_id: str, data: Any, name: str) -> None:
    client.log_text(run_id, json.dumps(data, indent=2, default=str) + "\n", name)


# ----------------------------------------------------------------------------------------------------------
# The job


def _validate(cfg: DictConfig) -> None:
    require_complete(cfg)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not one of {', '.join(SPLITS)}")
    check_method(cfg.get("choose"), cfg.decision.get("target_recall"))
    if cfg.get("log_predictions", "once") not in LOG_PREDICTIONS:
        raise ConfigError(f"log_predictions={cfg.log_predictions!r} is not one of {', '.join(LOG_PREDICTIONS)}")


def evaluate(cfg: DictConfig, decision_overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Evaluate one model on one split and log a new MLflow run; returns the logged metrics.

    ``decision_overrides`` default to the ``decision.*`` values given (not null).
    """
    _validate(cfg)
    if decision_overrides is None:
        decision_overrides = given_overrides(OmegaConf.to_container(cfg.decision, resolve=True))
    # a checkpoint file is read (and a foreign one refused) before anything is written
    source = ModelSource.from_checkpoint(Path(str(cfg.ckpt)).expanduser()) if cfg.get("ckpt") else None
    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    target = find_target(cfg, client, uri, source)
    source, parent = target.source, target.run
    kind = source.kind
    eval_cfg = evaluation_config(source, cfg)
    stored_point = source.operating_point if cfg.get("use_operating_point", True) else None
    params = resolve_decision(asdict(source.spec.decision), stored_point, decision_overrides)
    split = str(cfg.split)
    data_name = str(eval_cfg.data.get("name", "data"))

    local = not uri.startswith(("http://", "https://", "databricks"))
    if cfg.get("name"):
        experiment_name = str(cfg.name)
    elif parent is not None:
        experiment_name = client.get_experiment(parent.info.experiment_id).name
    else:
        experiment_name = DEFAULT_EXPERIMENT
    exp_id = get_or_create_experiment(client, experiment_name, cfg.logger.get("artifact_root") if local else None)
    parent_id = parent.info.run_id if parent is not None else ""
    model_name = str((source.config.get("model") or {}).get("name", kind))
    tags = {"mlflow.source.name": "scratchlab.evaluate", **git_info(), **_hydra_tags(),
            "scratchlab.evaluated_run": parent_id, "scratchlab.split": split, "scratchlab.data": data_name,
            "scratchlab.checkpoint": str(source.checkpoint or ""), "model": model_name, "data": data_name,
            "task": kind}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent_id
    if cfg.get("choose"):
        tags["scratchlab.choose"] = str(cfg.choose)
    run = client.create_run(exp_id, run_name=f"eval-{split}", tags=tags)
    run_id = run.info.run_id
    try:
        metrics = _evaluate_into(run_id, client, cfg, target, eval_cfg, params, split, data_name, model_name)
    except BaseException as err:
        import traceback

        try:
            client.log_text(run_id, "".join(traceback.format_exception(err)), "error.txt")
        finally:
            client.set_terminated(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    _print_summary(metrics, client, run_id, experiment_name, exp_id, uri, parent_id)
    return metrics


def _evaluate_into(run_id: str, client: MlflowClient, cfg: DictConfig, target: Target, eval_cfg: DictConfig,
                   params: DecisionParams, split: str, data_name: str, model_name: str) -> dict[str, float]:
    from scratchlab.evaluation.rescoring import compute_metrics

    source, parent = target.source, target.run
    cache_dir = Path(str(cfg.cache_dir))
    fetch = _cache_fetcher(client) if cfg.get("log_predictions", "once") != "never" else None
    device = str(cfg.get("device", "cpu"))
    refresh = bool(cfg.get("refresh", False))

    def predictions(which: str) -> Predictions:
        return get_predictions(source, eval_cfg, which, cache_dir, device=device, refresh=refresh, fetch=fetch)

    metrics: dict[str, float] = {}
    chosen: dict[str, Any] | None = None
    used: list[Predictions] = []
    if cfg.get("choose"):
        val = predictions("val")
        used.append(val)
        grid = list(cfg.choose_mask_thresholds) if cfg.get("choose_mask_thresholds") else None
        target_recall = cfg.decision.get("target_recall")
        params, choice, chosen = operating_point_on(val, params, str(cfg.choose), target_recall, grid)
        chosen.update({"data": data_name, "evaluation_run": run_id,
                       "evaluated_run": parent.info.run_id if parent is not None else None})
        xlabel = choice_xlabel(params, val.segmentation)
        import matplotlib.pyplot as plt

        fig = threshold_figure(choice, xlabel, f"{model_name} on {data_name} (validation)")
        client.log_figure(run_id, fig, "operating_point.png")
        plt.close(fig)
        metrics.update({f"val/{k}": v for k, v in compute_metrics(val, params).items()})
        if cfg.get("save_operating_point", True):
            if source.checkpoint is not None:
                stored = write_operating_point(source.checkpoint, chosen)
                log.info("operating point written into %s: %s", source.checkpoint, decision_values(params, val.segmentation))
                if target.checkpoint_from_run and parent is not None:
                    client.log_artifact(parent.info.run_id, str(source.checkpoint), "checkpoints")
                chosen = stored
            else:
                log.warning("this model has no checkpoint file; the operating point is stored in MLflow only")
        _log_json(client, run_id, chosen, "operating_point.json")
        if parent is not None and cfg.get("save_operating_point", True):
            _log_json(client, parent.info.run_id, chosen, "operating_point.json")
            client.set_tag(parent.info.run_id, "scratchlab.operating_point", json.dumps(decision_values(params, val.segmentation)))

    preds = used[0] if used and split == "val" else predictions(split)
    if not any(p is preds for p in used):
        used.append(preds)
    values = compute_metrics(preds, params)
    metrics.update({f"{split}/{k}": v for k, v in values.items()})
    _log_metrics(client, run_id, metrics)
    if not preds.segmentation and preds.probs.shape[1] >= 2:
        _log_classifier_reports(client, run_id, preds, params)

    holder = _log_prediction_caches(client, run_id, used, str(cfg.get("log_predictions", "once")))
    key = preds.meta.get("key", "")
    client.set_tag(run_id, "scratchlab.prediction_cache", key)
    client.set_tag(run_id, "scratchlab.cache_hit", str(preds.from_cache).lower())
    if holder.get(key):
        client.set_tag(run_id, "scratchlab.prediction_cache_run", holder[key])
    prefix = f"eval-{split}-{cfg.choose}-" if cfg.get("choose") else f"eval-{split}-"
    client.update_run(run_id, name=prefix + decision_label(params, preds.segmentation))
    eval_params: dict[str, Any] = {"split": split, "evaluated_run": parent.info.run_id if parent is not None else "",
                                   "ckpt": str(source.checkpoint or ""), "choose": cfg.get("choose"),
                                   "model.name": model_name, "model.task": source.kind,
                                   "operating_point_used": bool(source.operating_point)
                                   and bool(cfg.get("use_operating_point", True)),
                                   "prediction_cache": key}
    eval_params.update({f"decision.{k}": v for k, v in asdict(params).items()})
    eval_params.update({f"data.{k}": v for k, v in flatten_config(eval_cfg.data).items()})
    _log_params(client, run_id, eval_params)
    return metrics


def _log_classifier_reports(client: MlflowClient, run_id: str, preds: Predictions, params: DecisionParams) -> None:
    import matplotlib.pyplot as plt
    import torch

    from scratchlab.figures import classification_report, confusion_matrix_figure

    probs, targets = torch.from_numpy(preds.probs.astype("float32")), torch.from_numpy(preds.labels)
    client.log_text(run_id, classification_report(probs, targets, preds.class_names, params.threshold),
                    "classification_report.txt")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The figure layout has changed to tight")
        fig = confusion_matrix_figure(probs, targets, preds.class_names, params.threshold)
    client.log_figure(run_id, fig, "confusion_matrix.png")
    plt.close(fig)


def _log_prediction_caches(client: MlflowClient, run_id: str, used: list[Predictions], policy: str) -> dict[str, str]:
    """Log the cache files per ``policy``; returns key -> id of a run that holds it as an artifact."""
    out: dict[str, str] = {}
    for preds in used:
        key = preds.meta.get("key", "")
        if policy == "never" or preds.path is None:
            continue
        artifact = f"{CACHE_ARTIFACT_DIR}/{key}.npz"
        if policy == "once":
            holders = _search_all(client, f"tags.`{artifact_tag(key)}` = '{artifact}'")
            if holders:
                out[key] = holders[0].info.run_id
                continue
        client.log_artifact(run_id, str(preds.path), CACHE_ARTIFACT_DIR)
        client.set_tag(run_id, artifact_tag(key), artifact)
        out[key] = run_id
    return out


def _print_summary(metrics: Mapping[str, float], client: MlflowClient, run_id: str, experiment: str, exp_id: str,
                   uri: str, parent_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.4f}")
    Console().print(table)
    name = client.get_run(run_id).info.run_name
    # plain prints: a run id or address is never broken across lines, whatever the terminal width
    parent = f", child of {parent_id}" if parent_id else ""
    print(f"MLflow run: {run_id} ({name}) in experiment {experiment!r}{parent}")
    if uri.startswith(("http://", "https://")):
        print(f"  view: {uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}")
