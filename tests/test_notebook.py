"""The comparison notebook runs top to bottom on runs made here, so it never rots."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import PROJECT_DIR, run_cli, tiny_overrides


def test_compare_runs_notebook_executes(tmp_path: Path, tiny_dataset: Path) -> None:
    overrides = [o for o in tiny_overrides(tmp_path, tiny_dataset) if not o.startswith("hydra.run")]
    result = run_cli("scratchlab.train", ["--multirun", "optimizer.lr=1e-3,3e-3", "trainer.max_epochs=1",
                                          *overrides], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    notebook = nbformat.read(PROJECT_DIR / "notebooks" / "compare_runs.ipynb", as_version=4)
    os.environ["SCRATCHLAB_ROOT"] = str(tmp_path)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        del os.environ["SCRATCHLAB_ROOT"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    table = next(o for o in outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {}))
    assert table["data"]["text/html"].count("<tr") == 3, "a header and one row per run"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "lr plot, PR curve, predictions"
