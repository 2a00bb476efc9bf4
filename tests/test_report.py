"""scratchlab.report on runs created here: reported vs reproduced tables, comparisons by tag, links, errors."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scratchlab.cli import run_or_exit
from scratchlab.config import compose
from scratchlab.errors import ConfigError
from scratchlab.reporting import build_tables, make_report, quote_filter_args
from tests.conftest import run_cli


def _run(client: MlflowClient, exp: str, name: str, tags: dict, params: dict, metrics: dict,
         status: str = "FINISHED") -> str:
    run = client.create_run(exp, run_name=name, tags=tags)
    for k, v in params.items():
        client.log_param(run.info.run_id, k, v)
    for k, v in metrics.items():
        client.log_metric(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id, status)
    time.sleep(0.01)  # distinct start times: "latest per row" is well defined
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp_path = tmp_path_factory.mktemp("report")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    reproduce = client.create_experiment("reproduce", artifact_location=(tmp_path / "artifacts").as_uri())
    other = client.create_experiment("scratchlab", artifact_location=(tmp_path / "artifacts2").as_uri())
    reported = {"reported.test/acc": "0.96", "reported.test/recall_bad": "0.99", "model.name": "cnn"}
    ids = {
        "old": _run(client, reproduce, "custom_cnn", {"study": "reproduce", "row": "custom_cnn"}, reported,
                    {"test/acc": 0.5, "test/recall_bad": 0.5}),
        "new": _run(client, reproduce, "custom_cnn", {"study": "reproduce", "row": "custom_cnn"}, reported,
                    {"test/acc": 0.90, "test/recall_bad": 1.0, "test/f1_bad": 0.8}),
        "failed": _run(client, reproduce, "custom_cnn", {"study": "reproduce", "row": "custom_cnn"}, reported,
                       {"test/acc": 0.1}, status="FAILED"),
        "resnet": _run(client, reproduce, "resnet50", {"study": "reproduce", "row": "resnet50"},
                       {"reported.test/acc": "0.98"}, {"test/acc": 0.97}),
        "lr1": _run(client, other, "cnn-a", {"study": "lr_sweep"}, {"optimizer.lr": "0.001"},
                    {"test/acc": 0.8, "test/f1_bad": 0.7}),
        "lr2": _run(client, other, "cnn-b", {"study": "lr_sweep"}, {"optimizer.lr": "0.0003"},
                    {"test/acc": 0.85, "test/f1_bad": 0.75}),
    }
    return {"root": tmp_path, "client": client, "ids": ids}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_reported_vs_reproduced_table(store: dict, capsys: pytest.CaptureFixture) -> None:
    root, ids = store["root"], store["ids"]
    make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/out"]))
    markdown = (root / "out/reproduce.md").read_text()
    assert capsys.readouterr().out.count("## reproduce") == 1, "the Markdown is printed too"
    rows = {r["row"]: r for r in _rows(root / "out/reproduce.csv")}
    assert set(rows) == {"custom_cnn", "resnet50"}, "runs without reported numbers are not reproductions"
    cnn = rows["custom_cnn"]
    assert cnn["run_id"] == ids["new"], "the latest finished run of a row"
    assert float(cnn["test/acc reported"]) == 0.96 and float(cnn["test/acc reproduced"]) == 0.90
    assert float(cnn["test/acc diff"]) == pytest.approx(-0.06)
    assert float(cnn["test/recall_bad diff"]) == pytest.approx(0.01)
    assert rows["resnet50"]["test/recall_bad reported"] == "" and float(rows["resnet50"]["test/acc diff"]) == \
        pytest.approx(-0.01)
    assert "| custom_cnn | `" + ids["new"] + "` | 0.9600 | 0.9000 | -0.0600 |" in markdown
    assert "test/acc reported" in markdown and "test/f1_bad" not in markdown


def test_existing_tables_are_kept_unless_overwrite(store: dict) -> None:
    """A second report into the same folder is one error line and leaves every table as it was."""
    root = store["root"]
    make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/again"]))
    (root / "again/reproduce.csv").write_text("edited by hand")
    with pytest.raises(ConfigError, match="reproduce.md already exists; add overwrite=true"):
        make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/again"]))
    assert (root / "again/reproduce.csv").read_text() == "edited by hand"
    make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/again", "overwrite=true"]))
    assert {r["row"] for r in _rows(root / "again/reproduce.csv")} == {"custom_cnn", "resnet50"}
    (root / "again/reproduce.md").unlink()  # the CSV alone is refused too
    with pytest.raises(ConfigError, match="reproduce.csv already exists"):
        make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/again"]))
    assert not (root / "again/reproduce.md").exists()


def test_compare_runs_by_tag_filter_through_the_cli(store: dict) -> None:
    root = store["root"]
    result = run_cli("scratchlab.report", [f"paths.root_dir={root}", f"output={root}/cmp",
                                           "filter=tags.study = 'lr_sweep'", "params=[optimizer.lr]",
                                           "metrics=[test/acc,test/f1_bad]", "title=lr_sweep"], cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## lr_sweep" in result.stdout
    rows = _rows(root / "cmp/lr_sweep.csv")
    assert {(r["row"], r["optimizer.lr"], float(r["test/acc"])) for r in rows} == {("cnn-a", "0.001", 0.8),
                                                                                 ("cnn-b", "0.0003", 0.85)}
    assert (root / "cmp/lr_sweep.md").read_text().count("| cnn-") == 2


def test_compare_experiments_grouped_and_server_links(store: dict) -> None:
    root, client = store["root"], store["client"]
    tables = make_report(compose("report", [f"paths.root_dir={root}", f"output={root}/exp",
                                            "experiments=[reproduce,scratchlab]", "group_by=experiment"]))
    assert {t.name for t in tables} == {"reproduce", "scratchlab"}
    assert (root / "exp/scratchlab.md").is_file() and (root / "exp/reproduce.csv").is_file()
    runs = [client.get_run(store["ids"]["lr1"])]
    [table] = build_tables(runs, {runs[0].info.experiment_id: "scratchlab"}, "http://mlflow.example:5000",
                           group_by=None)
    url = f"http://mlflow.example:5000/#/experiments/{runs[0].info.experiment_id}/runs/{store['ids']['lr1']}"
    assert table.rows[0]["url"] == url and f"]({url})" in table.to_markdown()


def test_report_mistakes_exit_2(store: dict, capsys: pytest.CaptureFixture) -> None:
    root = store["root"]
    for args, expected in ((["experiments=[nope]"], "nope"), (["filter=tags.study ==== 'x'"], "filter"),
                           (["filter=tags.study = 'none_such'"], "no finished runs")):
        with pytest.raises(SystemExit) as exc:
            run_or_exit(make_report, compose("report", [f"paths.root_dir={root}", *quote_filter_args(args)]))
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert exc.value.code == 2 and len(errors) == 1 and expected in errors[0], errors


def test_filter_arguments_are_quoted_for_hydra() -> None:
    assert quote_filter_args(["filter=tags.study = 'a'", "x=1"]) == ['filter="tags.study = \'a\'"', "x=1"]
    assert quote_filter_args(['filter=tags.a = "b"']) == ["filter='tags.a = \"b\"'"]
    assert quote_filter_args(['filter="already quoted"']) == ['filter="already quoted"']
