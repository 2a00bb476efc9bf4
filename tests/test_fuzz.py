"""Fuzz: seeded malformed images, masks, VIA JSON and Pascal VOC XML fed to the data check, training and
predict. No traceback anywhere; each bad file is named once; every readable file is used; exit codes as
documented (data check 2 on fatal problems, training 2, predict 1 when it skipped files).

The counts in the README come from ``python -m pytest -q tests/test_fuzz.py -s`` (the summary line).
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scratchlab.config import compose
from scratchlab.training import run_training
from tests.cli_calls import call_main
from tests.conftest import run_cli, tiny_overrides
from tests.fuzz_inputs import FATAL, OK, WARNING, Input, via_projects, voc_sets, write_folder_inputs

OUTCOMES: Counter[str] = Counter()
"""Inputs tried and what became of them, printed at the end of the module (the README's figures)."""


def _no_traceback(result) -> None:
    crashed = "Traceback" in result.stdout + result.stderr
    OUTCOMES["crashes"] += crashed
    assert not crashed, (result.stdout + result.stderr)[-3000:]


def _named(text: str, root: Path, inputs: list[Input]) -> dict[str, list[str]]:
    """Per input: the severities under which the report text names it (by its full path)."""
    found: dict[str, list[str]] = {i.path: [] for i in inputs}
    severity = ""
    for line in text.splitlines():
        header = re.match(r"\s+(FATAL|WARNING) \w+ \(\d+\)$", line)
        if header:
            severity = header.group(1).lower()
            continue
        for i in inputs:
            found[i.path] += [severity] * line.count(str(root / i.path))
    return found


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Input]]:
    root = tmp_path_factory.mktemp("fuzz") / "mixed"
    return root, write_folder_inputs(root, seed=0)


def test_data_check_names_each_bad_file_once(mixed, tmp_path: Path) -> None:
    root, inputs = mixed
    report = tmp_path / "report.txt"
    result = run_cli("scratchlab.data.check", [f"paths.root_dir={tmp_path}", "data=folder", f"data.root={root}",
                                               f"report={report}", "grid=null"], cwd=tmp_path)
    _no_traceback(result)
    assert result.returncode == 2, result.stderr[-2000:]
    text = report.read_text()
    images = sum(1 for p in root.glob("*/*") if p.parent.name in ("good", "bad"))
    assert f"images: {images} " in text, "every image file is counted"
    named = _named(text, root, inputs)
    for i in inputs:
        assert named[i.path] == ([] if i.expect == OK else [i.expect]), (i, named[i.path])
        OUTCOMES[i.expect if i.expect != OK else "read"] += 1
    OUTCOMES["tried"] += len(inputs)


def test_training_stops_naming_each_unusable_file_once(mixed, tmp_path: Path) -> None:
    root, inputs = mixed
    result = run_cli("scratchlab.train", tiny_overrides(tmp_path, root) + ["trainer.max_epochs=1"], cwd=tmp_path)
    _no_traceback(result)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fatal problems" in errors[0], result.stderr[-2000:]
    output = result.stdout + result.stderr
    for i in inputs:
        if i.expect == FATAL:
            assert output.count(str(root / i.path)) == 1, i


def test_readable_oddities_train_and_predict_skips_only_broken_images(mixed, tmp_path: Path) -> None:
    root, inputs = mixed
    usable = tmp_path / "usable"
    shutil.copytree(root, usable)
    for i in inputs:
        if i.expect == FATAL:
            (usable / i.path).unlink()
    metrics = run_training(compose("train", tiny_overrides(tmp_path, usable) + ["trainer.max_epochs=1"]))
    assert "test/acc" in metrics
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("scratchlab").experiment_id])
    split = client.download_artifacts(run.info.run_id, "split.csv", str(tmp_path))
    used = {Path(line.split(",")[0]).name for line in Path(split).read_text().splitlines()[1:]}
    on_disk = {p.name for p in usable.glob("*/*") if p.parent.name in ("good", "bad")}
    assert used == on_disk, "every readable image takes part in training"

    images = tmp_path / "predict_in"
    images.mkdir()
    for p in root.glob("*/*"):
        if p.parent.name in ("good", "bad"):
            shutil.copy(p, images / p.name)
    out = tmp_path / "predict_out"
    result = run_cli("scratchlab.predict", [f"ckpt={run.data.tags['best_checkpoint']}", f"input={images}",
                                            f"output={out}", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    _no_traceback(result)
    broken = {Path(i.path).name for i in inputs if i.expect == FATAL and i.is_image}
    assert result.returncode == (1 if broken else 0), result.stderr[-2000:]
    records = {Path(r["path"]).name: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert set(records) == {p.name for p in images.iterdir()}
    for name, record in records.items():
        assert ("error" in record) == (name in broken), record
        if name in broken:
            assert result.stderr.count(name) == 1, name
        else:
            assert record["decision"] in ("good", "bad")
    OUTCOMES["predict_skipped"] += len(broken)


@pytest.mark.parametrize(("source", "cases"), [("via", via_projects(seed=0)), ("neu", voc_sets(seed=0))],
                         ids=["via_json", "voc_xml"])
def test_annotation_files(source: str, cases, tmp_path: Path, monkeypatch, capsys) -> None:
    for n, (kind, write) in enumerate(cases):
        folder = tmp_path / f"{kind}_{n}"
        write(folder)
        annotation = next(p for p in folder.rglob("*") if p.suffix in (".json", ".xml"))
        result = call_main("scratchlab.data.check", [f"paths.root_dir={tmp_path}", f"data={source}",
                                                     f"data.root={folder}", "grid=null", "report=null"],
                           monkeypatch, capsys)
        _no_traceback(result)
        output = result.stdout + result.stderr
        if kind == "voc_box_outside":  # the images are usable; the box is reported
            assert result.returncode == 0 and "WARNING box_outside" in result.stdout, output
            OUTCOMES[WARNING] += 1
        else:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert result.returncode == 2 and len(errors) == 1, (kind, output)
            OUTCOMES[FATAL] += 1
        assert output.count(str(annotation)) == 1, (kind, output)
        OUTCOMES["tried"] += 1


def test_zz_counts() -> None:
    """Print the figures of the README's fuzz section (runs last in this module)."""
    if not OUTCOMES["tried"]:
        pytest.skip("the counts need the other tests of this module")
    clear = OUTCOMES[FATAL] + OUTCOMES[WARNING]
    print(f"\nfuzz: {OUTCOMES['tried']} inputs tried, {clear} clear errors or warnings "
          f"({OUTCOMES[FATAL]} fatal, {OUTCOMES[WARNING]} warnings), {OUTCOMES['read']} read correctly, "
          f"{OUTCOMES['predict_skipped']} skipped by predict with a warning, {OUTCOMES['crashes']} crashes")
    assert OUTCOMES["tried"] >= 100 and OUTCOMES["crashes"] == 0
