"""The command line: bad input gives one clear line and exit code 2; outputs appear only when complete."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from m2m.cli import STAGE_PARAMS, app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_a_command_per_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in STAGE_PARAMS:
        assert command in result.output


def test_subset_writes_outputs_and_timing(tmp_path, monkeypatch):
    monkeypatch.setenv("M2M_TIMINGS", str(tmp_path / "timings.jsonl"))
    result = runner.invoke(app, ["subset", "--annotations", str(ROOT / "data/raw/fitzpatrick17k.csv"),
                                 "--out", str(tmp_path / "subset.csv"), "--table", str(tmp_path / "t1.md"),
                                 "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "1631 images (1284 light, 347 dark)" in result.output
    assert json.loads((tmp_path / "timings.jsonl").read_text())["stage"] == "subset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subset.csv", "t1.md", "timings.jsonl"]  # no temp files


def test_bad_param_is_one_line_and_leaves_nothing(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["sha256"] = "0" * 64
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["subset", "--annotations", str(ROOT / "data/raw/fitzpatrick17k.csv"),
                                 "--out", str(tmp_path / "subset.csv"), "--table", str(tmp_path / "t1.md"),
                                 "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2
    assert "error:" in result.output and "-S data.sha256=851dfaab" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
