"""The short table printed at the end of a run: test metrics and where the MLflow run is."""
from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from scratchlab.tracking import TrackedRun

KEY_METRICS = ("acc", "precision_bad", "recall_bad", "f1_bad", "precision_good", "recall_good", "auroc", "dice", "iou",
               "pixel_precision", "pixel_recall", "map_segm", "f1_macro", "loss")


def print_summary(metrics: Mapping[str, float], run: TrackedRun, checkpoint: str | None) -> None:
    table = Table(title="test metrics", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    tested = sorted(k[5:] for k in metrics if k.startswith("test/"))
    binary = "precision_bad" in tested or "dice" in tested
    shown = [k for k in KEY_METRICS if k in tested] if binary else tested  # multiclass: every class
    for key in shown:
        table.add_row(key, f"{metrics[f'test/{key}']:.4f}")
    Console().print(table)
    # plain prints: a path or run id is never broken across lines, whatever the terminal width
    print(f"MLflow run: {run.run_id} in experiment {run.experiment_name!r}")
    print(f"  view: {run.ui_hint}")
    if checkpoint:
        print(f"  best checkpoint: {checkpoint}")
