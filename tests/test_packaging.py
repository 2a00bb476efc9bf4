"""A built wheel carries the configs and the sweeper plugin: installed from it, scratchlab composes its
configs from any directory."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import PROJECT_DIR


def test_wheel_carries_configs_and_runs_from_anywhere(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(PROJECT_DIR)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("scratchlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in ("scratchlab/conf/train.yaml", "scratchlab/conf/model/cnn.yaml",
                   "scratchlab/conf/experiment/custom_cnn.yaml", "scratchlab/conf/hparams_search/lr_wd.yaml",
                   "hydra_plugins/scratchlab_optuna_sweeper/sweeper.py"):
        assert member in names, member
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import scratchlab.config as c; print(c.CONFIG_DIR)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), "the installed copy, not the checkout"
    shown = subprocess.run([sys.executable, "-m", "scratchlab.train", "experiment=custom_cnn", "hparams_search=lr_wd",
                            "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: cnn" in shown.stdout and "optimized_metric: val/f1_bad" in shown.stdout


def test_user_config_folder_joins_the_search_path(tmp_path: Path) -> None:
    (tmp_path / "my_conf" / "data").mkdir(parents=True)
    (tmp_path / "my_conf" / "data" / "line3.yaml").write_text(
        "defaults:\n  - folder\n  - _self_\nname: line3\nroot: /data/line3\n")
    for extra in (["--config-dir", "my_conf"], [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"]):
        shown = subprocess.run([sys.executable, "-m", "scratchlab.train", *extra, "data=line3", "--cfg", "job"],
                               cwd=tmp_path, capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "name: line3" in shown.stdout and "root: /data/line3" in shown.stdout
