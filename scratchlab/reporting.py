"""Markdown and CSV tables of MLflow runs, reported vs reproduced (behind ``python -m scratchlab.report``).

Runs of ``experiments/`` configs carry the numbers an earlier work reported as ``reported.<metric>``
params (and ``study`` / ``row`` tags). By default every such run is tabulated, one table per study:
per metric the reported value, the reproduced one (the run's metric) and the difference
(reproduced - reported). ``experiments=[...]`` and/or ``filter=...`` compare any set of runs instead.
Each table is written as ``<output>/<group>.md`` and ``<output>/<group>.csv``; the Markdown is also printed.
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scratchlab.config import ui_command
from scratchlab.errors import ConfigError
from scratchlab.safe_output import atomic_path, checked_target, output_folder, refuse_existing, write_text

REPORTED_PREFIX = "reported."
DEFAULT_METRICS = ("test/acc", "test/precision_bad", "test/recall_bad", "test/f1_bad", "test/precision_good",
                   "test/recall_good", "test/auroc", "test/dice", "test/iou", "test/map_segm")
EVALUATION_TAG = "scratchlab.evaluated_run"


# ----------------------------------------------------------------------------------------------------------
# Reading MLflow


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The UI address of a run for a tracking server; None for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def reported_values(run: Any) -> dict[str, float]:
    """``reported.<metric>`` params of a run as numbers (non-numbers are left out)."""
    out: dict[str, float] = {}
    for key, value in run.data.params.items():
        if key.startswith(REPORTED_PREFIX):
            try:
                out[key[len(REPORTED_PREFIX):]] = float(value)
            except (TypeError, ValueError):
                continue
    return out


CUT_KEYS = ("profile", "trainer.max_epochs", "trainer.limit_train_batches", "trainer.limit_val_batches",
            "trainer.limit_test_batches", "data.source.count")
"""Overrides that shrink a run (epochs, batches, data): such a run is a smoke test, not a reproduction."""


def _cuts(run: Any) -> list[str]:
    """What shrank ``run`` itself: its ``smoke`` tag and its overrides of ``CUT_KEYS``."""
    cut = [o for o in run.data.tags.get("hydra.overrides", "").split() if o.lstrip("+~").split("=")[0] in CUT_KEYS]
    if run.data.tags.get("smoke") and not any(o.startswith("profile=") for o in cut):
        cut.insert(0, str(run.data.tags["smoke"]))
    return cut


def evaluated_id(run: Any) -> str | None:
    """For a ``python -m scratchlab.evaluate`` run of a training run: the id of that run (its MLflow parent);
    None for other runs and for evaluations of a checkpoint file alone."""
    tags = run.data.tags
    if EVALUATION_TAG not in tags:
        return None
    return tags.get("mlflow.parentRunId") or tags[EVALUATION_TAG] or None


def reproduction(run: Any, runs_by_id: Mapping[str, Any] | None = None) -> str:
    """``yes``, or ``no (smoke: ...)`` for a ``profile=cpu`` run or one whose epochs, batches or data were cut.

    An evaluation run adds the cuts of the training run it evaluated (looked up in ``runs_by_id``) to its own,
    so evaluations of a smoke run are smoke too; ``unknown (...)`` when that run is not there.
    """
    cut = _cuts(run)
    parent = evaluated_id(run)
    if parent is not None:
        if parent not in (runs_by_id or {}):
            return f"unknown (evaluated run {parent} not found)"
        cut = list(dict.fromkeys(_cuts(runs_by_id[parent]) + cut))
    return f"no (smoke: {' '.join(cut)})" if cut else "yes"


def evaluated_runs(client: Any, runs: Sequence[Any], known: Sequence[Any] = ()) -> dict[str, Any]:
    """The training runs that the evaluation runs among ``runs`` evaluated, by id: taken from ``known`` (and
    ``runs``) where there, else read from MLflow; runs MLflow no longer has are left out."""
    from mlflow.exceptions import MlflowException

    found = {r.info.run_id: r for r in (*known, *runs)}
    out: dict[str, Any] = {}
    for run_id in {evaluated_id(r) for r in runs} - {None}:
        if run_id in found:
            out[run_id] = found[run_id]
            continue
        try:
            out[run_id] = client.get_run(run_id)
        except MlflowException:
            continue
    return out


def search_runs(client: Any, experiments: Sequence[str] | None = None, filter_string: str | None = None) -> list:
    """All runs (every page) of the named experiments (all when None) matching ``filter_string``."""
    from mlflow.exceptions import MlflowException

    if experiments:
        ids = []
        for name in experiments:
            exp = client.get_experiment_by_name(str(name))
            if exp is None:
                known = sorted(e.name for e in client.search_experiments())
                raise ConfigError(f"experiment {name!r} does not exist; known: {', '.join(known) or 'none'}")
            ids.append(exp.experiment_id)
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    runs: list = []
    token = None
    try:
        while True:
            page = client.search_runs(ids, filter_string or "", max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    except MlflowException as err:
        raise ConfigError(f"filter={filter_string!r} is not a valid MLflow search filter: "
                          f"{str(err.message).splitlines()[0]}") from err
    return runs


# ----------------------------------------------------------------------------------------------------------
# Tables


@dataclass
class ReportTable:
    """One group of runs as rows; ``rows`` hold raw values, ``metrics`` the metric columns in order."""

    name: str
    rows: list[dict[str, Any]]
    metrics: list[str]
    params: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)

    def columns(self) -> list[tuple[str, str, str]]:
        """(key in a row, Markdown header, CSV header) for every column after the run columns."""
        out = [(f"param:{p}", p, p) for p in self.params]
        for m in self.metrics:
            if m in self.reported:
                out += [(f"reported:{m}", f"{m} reported", f"{m} reported"),
                        (f"value:{m}", f"{m} reproduced", f"{m} reproduced"), (f"diff:{m}", "Δ", f"{m} diff")]
            else:
                out.append((f"value:{m}", m, m))
        return out + [("weights", "weights", "weights"), ("reproduction", "reproduction", "reproduction")]

    def to_markdown(self, digits: int = 4, tracking_uri: str = "") -> str:
        cols = self.columns()
        head = ["row", "run", *[h for _, h, _ in cols]]
        lines = [f"## {self.name}", ""]
        if self.reported:
            lines += ["Reported: the numbers of the earlier work (the config's `reported:` block); reproduced: this "
                      "run's metric; Δ = reproduced − reported.", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(cols)) + "|"]
        for row in self.rows:
            link = f"[`{row['run_id']}`]({row['url']})" if row.get("url") else f"`{row['run_id']}`"
            cells = [_md_escape(row["row"]), link]
            for key, _, _ in cols:
                cells.append(_format(row.get(key), digits, signed=key.startswith("diff:")))
            lines.append("| " + " | ".join(cells) + " |")
        if tracking_uri and not tracking_uri.startswith(("http://", "https://")):
            lines += ["", f"Runs: `{ui_command(tracking_uri)}`"]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: Path) -> None:
        """The table as CSV (full precision), written atomically."""
        cols = self.columns()
        header = ["group", "row", "run_id", "run_name", "experiment", "status", "url", *[h for _, _, h in cols]]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in self.rows:
                writer.writerow([self.name, row["row"], row["run_id"], row["run_name"], row["experiment"],
                                 row["status"], row.get("url") or "",
                                 *["" if row.get(k) is None else row[k] for k, _, _ in cols]])


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _format(value: Any, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return _md_escape(value)


def _ordered(keys: Iterable[str]) -> list[str]:
    """Metric keys in a familiar order: the common test metrics first, the rest alphabetically."""
    keys = set(keys)
    known = [k for k in DEFAULT_METRICS if k in keys]
    return known + sorted(keys - set(known))


def _group_of(run: Any, group_by: str | None, experiments: Mapping[str, str], default: str) -> str:
    if group_by is None:
        return default
    if group_by == "experiment":
        return experiments.get(run.info.experiment_id, run.info.experiment_id)
    return run.data.tags.get(group_by.removeprefix("tags."), "(none)")


def build_tables(runs: Sequence[Any], experiment_names: Mapping[str, str], tracking_uri: str = "",
                 metrics: Sequence[str] | None = None, params: Sequence[str] | None = None,
                 group_by: str | None = "study", default_group: str = "comparison",
                 latest: bool = False, evaluated: Mapping[str, Any] | None = None) -> list[ReportTable]:
    """Group ``runs`` into tables; with ``latest`` only the newest run per (group, row) is kept.

    ``evaluated``: the training runs (by id) that evaluation runs evaluated, for their ``reproduction``
    verdict (``evaluated_runs``); those among ``runs`` are found without it.
    """
    runs_by_id = {**{r.info.run_id: r for r in runs}, **(evaluated or {})}
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(_group_of(run, group_by, experiment_names, default_group), []).append(run)
    tables = []
    for name in sorted(groups):
        chosen = sorted(groups[name], key=lambda r: (r.data.tags.get("row") or r.info.run_name or "",
                                                     r.info.start_time or 0))
        if latest:
            newest: dict[str, Any] = {}
            for run in chosen:
                newest[run.data.tags.get("row") or run.info.run_name or run.info.run_id] = run
            chosen = sorted(newest.values(), key=lambda r: r.data.tags.get("row") or r.info.run_name or "")
        reported_keys = set().union(*(reported_values(r) for r in chosen)) if chosen else set()
        if metrics:
            columns = list(metrics)
        elif reported_keys:
            columns = _ordered(reported_keys)
        else:
            present = set().union(*(r.data.metrics for r in chosen))
            columns = [m for m in DEFAULT_METRICS if m in present]
        rows = []
        for run in chosen:
            reported = reported_values(run)
            row: dict[str, Any] = {"row": run.data.tags.get("row") or run.info.run_name or run.info.run_id,
                                   "run_id": run.info.run_id, "run_name": run.info.run_name or "",
                                   "experiment": experiment_names.get(run.info.experiment_id, run.info.experiment_id),
                                   "status": run.info.status,
                                   "url": run_url(tracking_uri, run.info.experiment_id, run.info.run_id),
                                   "weights": run.data.tags.get("weights_source"),
                                   "reproduction": reproduction(run, runs_by_id)}
            for p in params or ():
                row[f"param:{p}"] = run.data.params.get(p)
            for m in columns:
                value = run.data.metrics.get(m)
                row[f"value:{m}"] = value
                if m in reported_keys:
                    row[f"reported:{m}"] = reported.get(m)
                    row[f"diff:{m}"] = value - reported[m] if value is not None and m in reported else None
            rows.append(row)
        tables.append(ReportTable(name=name, rows=rows, metrics=columns, params=list(params or ()),
                                  reported={m for m in columns if m in reported_keys}))
    return tables


def file_stem(name: str) -> str:
    """A safe file name for a group."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "report"


# ----------------------------------------------------------------------------------------------------------
# The job


def _as_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if OmegaConf.is_list(value) or isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise ConfigError(f"{key} must be a list, e.g. {key}=[a,b]")


def make_report(cfg: DictConfig) -> list[ReportTable]:
    """Read the runs, build the tables, write ``<output>/<group>.md|.csv``, print the Markdown."""
    from mlflow.tracking import MlflowClient

    from scratchlab.tracking import tracking_uri

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    experiments = _as_list(cfg.get("experiments"), "experiments")
    metrics = _as_list(cfg.get("metrics"), "metrics")
    params = _as_list(cfg.get("params"), "params")
    filter_string = cfg.get("filter") or None
    comparison = bool(experiments or filter_string)
    runs = found = search_runs(client, experiments, filter_string)
    if not cfg.get("include_unfinished", False):
        runs = [r for r in runs if r.info.status == "FINISHED"]
    if not (cfg.get("include_evaluations", False) or filter_string):
        runs = [r for r in runs if EVALUATION_TAG not in r.data.tags]
    if not comparison:
        runs = [r for r in runs if reported_values(r)]
    if not runs:
        what = (f"no finished runs match (experiments={experiments}, filter={filter_string!r})" if comparison else
                "no finished runs with reported numbers; train an experiments/ config first "
                "(python -m scratchlab.train experiment=custom_cnn) or pick runs with experiments=[...] / filter=...")
        raise ConfigError(f"{what} in {uri}")
    group_by = cfg.get("group_by") or (None if comparison else "study")
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    title = str(cfg.get("title") or "comparison")
    tables = build_tables(runs, names, uri, metrics, params, group_by=group_by, default_group=title,
                          latest=bool(cfg.get("latest", True)) and not comparison,
                          evaluated=evaluated_runs(client, runs, found))
    out = output_folder(cfg.output)
    stems = [file_stem(table.name) for table in tables]
    clash = [t.name for t, stem in zip(tables, stems) if stems.count(stem) > 1]
    if clash:
        raise ConfigError(f"groups {', '.join(map(repr, clash))} would share a file name in {out}; rename one (its "
                          "tag) or pick another group_by")
    targets = {stem: [checked_target(out, f"{stem}.md"), checked_target(out, f"{stem}.csv")] for stem in stems}
    refuse_existing([p for pair in targets.values() for p in pair], bool(cfg.get("overwrite", False)))
    digits = int(cfg.get("digits", 4))
    for table, stem in zip(tables, stems):  # nothing is written before every target is known to be free
        markdown = table.to_markdown(digits, uri)
        md, csv_path = targets[stem]
        write_text(md, markdown)
        table.write_csv(csv_path)
        print(markdown)
    print(f"wrote {len(tables)} table(s) to {out}: " + ", ".join(f"{file_stem(t.name)}.md/.csv" for t in tables))
    return tables


def quote_filter_args(argv: Sequence[str]) -> list[str]:
    """Let ``filter="tags.study = 'lr_sweep'"`` through Hydra's override parser as one quoted string."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "filter" and value and value[0] not in "\"'" and value != "null":
            if '"' not in value and not value.endswith("\\"):
                value = f'"{value}"'
            elif "'" not in value and not value.endswith("\\"):
                value = f"'{value}'"
            else:
                value = '"' + value.replace('"', '\\"') + '"'
            arg = f"{key}={value}"
        out.append(arg)
    return out
