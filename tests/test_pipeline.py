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

import pytest
import yaml

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
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}
    config = path / "conf/config.yaml"
    config.write_text(config.read_text().replace("- profile: mini", "- profile: tiny"))
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
    params = yaml.safe_load((path / "params.yaml").read_text())
    for seed in params["seeds"]:
        assert (path / f"data/splits/seed={seed}.csv").is_file()
    assert "1631" in (path / "reports/table1.md").read_text()


def test_exp_run_setting_iii_reruns_and_diffs(repo):
    path, env = repo
    out = run(["dvc", "exp", "run", "-S", "setting=iii"], path, env)
    assert "Stage 'subset' didn't change, skipping" in out
    assert "Running stage 'splits'" in out
    diff = run(["dvc", "params", "diff", "--json"], path, env)
    assert json.loads(diff)["params.yaml"]["setting"] == {"old": "i", "new": "iii"}
