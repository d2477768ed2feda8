"""Params: conf/ composes to the committed params.yaml; typos and bad values fail with the param's name."""

from pathlib import Path

import pytest
import torch
import yaml

from m2m.compose import compose
from m2m.devices import resolve_device
from m2m.errors import M2MError
from m2m.params import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_yaml_matches_conf(raw):
    assert yaml.safe_load(compose(ROOT / "conf", [])) == raw


@pytest.mark.parametrize("profile", ["mini", "paper", "tiny"])
def test_every_profile_is_valid(profile):
    params = parse_params(yaml.safe_load(compose(ROOT / "conf", [f"profile={profile}"])))
    assert params.profile == profile


def test_paper_profile_has_the_papers_values():
    p = parse_params(yaml.safe_load(compose(ROOT / "conf", ["profile=paper"])))
    assert p.seeds == (0, 42, 123, 1111, 1234)
    assert p.diffusion.resolution == 512 and p.generation.n_per_image == 5
    assert (p.generation.strength, p.generation.guidance_scale, p.generation.num_inference_steps) == (0.5, 2.0, 100)
    assert set(p.classifier.archs) == {"vgg16", "resnet18", "vit_b_16"} and p.classifier.epochs == 30


def test_unknown_key_is_named(raw):
    raw = {**raw, "generation": {**raw["generation"], "strenght": 0.7}}
    with pytest.raises(ParamsError, match=r"generation\.strenght"):
        parse_params(raw)


def test_wrong_type_is_named(raw):
    raw = {**raw, "splits": {**raw["splits"], "n_seed_images": "eight"}}
    with pytest.raises(ParamsError, match=r"splits\.n_seed_images"):
        parse_params(raw)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("setting", "iv", "setting"),
    ("seeds", [1, 1], "seeds"),
])
def test_bad_top_level_values(raw, key, value, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({**raw, key: value})


def test_strategy_typo_is_named(raw):
    raw = {**raw, "generation": {**raw["generation"], "strategy": "img2img-lora+ti"}}
    with pytest.raises(ParamsError, match="generation.strategy"):
        parse_params(raw)


@pytest.mark.parametrize("section", ["diffusion", "classifier"])
def test_device_typo_is_named(raw, section):
    raw = {**raw, section: {**raw[section], "device": "gpu"}}
    with pytest.raises(ParamsError, match=rf"{section}\.device must be auto, cpu, cuda, cuda:<n> or mps, got 'gpu'"):
        parse_params(raw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_named():
    assert resolve_device("auto", "classifier.device") == torch.device("cpu")
    with pytest.raises(M2MError, match=r"classifier\.device is 'cuda:1' but no CUDA device is available"):
        resolve_device("cuda:1", "classifier.device")


def test_stage_sees_only_declared_sections(tmp_path):
    params = load_params(ROOT / "params.yaml", "data")
    assert params.data.conditions
    with pytest.raises(ParamsError, match="not declared"):
        _ = params.splits


def test_a_profile_overrides_the_shared_values():
    shared = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["textual_inversion"]["per_token"]
    mini = parse_params(yaml.safe_load(compose(ROOT / "conf", ["profile=mini"])))
    paper = parse_params(yaml.safe_load(compose(ROOT / "conf", ["profile=paper"])))
    assert shared is True and paper.textual_inversion.per_token is True
    assert mini.textual_inversion.per_token is False
