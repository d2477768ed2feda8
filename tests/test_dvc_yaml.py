"""dvc.yaml and the commands agree: every stage declares exactly the params its command reads."""

from pathlib import Path

import pytest
import yaml

from m2m.cli import STAGE_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def stage_definitions(dvc_yaml: Path) -> dict[str, dict]:
    """Stage name -> its definition (the `do:` body for foreach stages)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


STAGES = stage_definitions(ROOT / "dvc.yaml")


def command_of(stage: dict) -> str:
    words = stage["cmd"].split()
    assert words[0] == "m2m", f"stage command should start with m2m: {stage['cmd']}"
    return words[1]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_exactly_the_params_it_reads(name):
    stage = STAGES[name]
    command = command_of(stage)
    assert command in STAGE_PARAMS, f"dvc stage {name} runs unknown command `m2m {command}`"
    declared = {p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])}
    assert declared == set(STAGE_PARAMS[command])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_paths_are_arguments_not_code(name):
    """Every dependency or output that the command touches is passed to it on the command line."""
    stage = STAGES[name]
    paths = [p if isinstance(p, str) else next(iter(p)) for key in ("outs", "metrics", "plots")
             for p in stage.get(key, [])]
    for path in paths:
        assert path.split("/")[0] in stage["cmd"] or path in stage["cmd"], f"{name}: {path} not passed to the command"


def test_every_stage_command_is_in_the_pipeline():
    commands = {command_of(stage) for stage in STAGES.values()}
    pretrain = ROOT / "pretrain/dvc.yaml"
    if pretrain.exists():
        commands |= {command_of(stage) for stage in stage_definitions(pretrain).values()}
    missing = set(STAGE_PARAMS) - commands
    assert not missing, f"commands registered as stages but run by no dvc.yaml: {missing}"
