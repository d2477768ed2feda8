"""The real DVC pipeline, end to end, in a temporary git repository on the `tiny` profile.

`dvc repro`, then `dvc exp run -S setting=iii`: every stage runs through its real command, and `dvc params diff`
and `dvc metrics diff` show how the settings differ.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def copy_project(dest: Path) -> None:
    """Copy the files git knows about (tracked or not ignored), as a fresh clone would have them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repo holding the project with `tiny` as its default profile, after `dvc repro` and a commit."""
    path = tmp_path_factory.mktemp("pipeline")
    copy_project(path)
    bin_dir = Path(sys.executable).parent
    # One torch thread per stage: tiny models gain nothing from more, and a busy machine's cores thrash.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}
    config = path / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - profile: mini", "  - profile: tiny"))
    run(["m2m", "compose-params"], path, env)
    run(["git", "init", "-q"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "project"], path, env)
    run(["dvc", "repro"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "repro"], path, env)
    return path, env


def test_repro_writes_every_stage_output(repo):
    path, _ = repo
    assert len((path / "data/subset.csv").read_text().splitlines()) == 1632
    assert "1631" in (path / "reports/table1.md").read_text()
    assert len(pd.read_csv(path / "data/images/ledger.csv")) == 1631
    assert set(json.loads((path / "metrics/leakage.json").read_text())) == {"seed=0", "seed=42"}
    for seed in (0, 42):
        split = pd.read_csv(path / f"data/splits/seed={seed}.csv")
        assert (path / f"models/ti/seed={seed}/tokens.json").is_file()
        assert (path / f"models/lora/seed={seed}/pytorch_lora_weights.safetensors").is_file()
        manifest = pd.read_csv(path / f"data/synthetic/seed={seed}/manifest.csv")
        assert len(manifest) == split.role.isin(["train", "val"]).sum()  # tiny profile: 1 image per source
        assert set(manifest.fitzpatrick_scale) <= {5, 6}
        for source in ("real", "syn", "real+syn"):
            assert (path / f"metrics/runs/{seed}-resnet18-{source}/metrics.json").is_file()
    metrics = json.loads((path / "metrics/metrics.json").read_text())
    for source in ("real", "syn", "real+syn"):
        for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
            assert {f"resnet18.{source}.{metric}.mean", f"resnet18.{source}.{metric}.std"} <= set(metrics)
    assert "± " in (path / "reports/results/tables.md").read_text()


def test_exp_run_setting_iii_reruns_only_what_depends_on_it(repo):
    path, env = repo
    out = run(["dvc", "exp", "run", "-S", "setting=iii"], path, env)
    for unchanged in ("subset", "images"):
        assert f"Stage '{unchanged}' didn't change, skipping" in out
    assert "Running stage 'splits'" in out
    diff = json.loads(run(["dvc", "params", "diff", "--json"], path, env))
    assert diff["params.yaml"]["setting"] == {"old": "i", "new": "iii"}
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "--json"], path, env))["metrics/metrics.json"]
    assert "resnet18.real+syn.accuracy.mean" in metrics_diff
    split = pd.read_csv(path / "data/splits/seed=0.csv")
    assert (split.role == "test").sum() == 291
