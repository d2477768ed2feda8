"""Pretraining of the embedded base model: params, the commands on tiny settings, and the shipped model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from m2m.cli import STAGE_PARAMS, app
from m2m.diffusion.pretrain import (
    ParamsError,
    caption_of,
    light_dark_side,
    load_pretrain_params,
    lr_lambda,
    structure_correlation,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models/base/mini-sd"
runner = CliRunner()


def tiny_params(tmp_path: Path, **overrides) -> Path:
    """pretrain/params.yaml shrunk to the tiny model: 16 px, 2 training steps, 2 probe samples."""
    raw = yaml.safe_load((ROOT / "pretrain/params.yaml").read_text())
    raw.update(model_size="tiny", threads=1)
    raw["corpus"].update(n_images=24, image_size=16)
    raw["vae"].update(steps=2, batch_size=4, crop_size=8, decoder_steps=1, decoder_batch_size=2)
    raw["unet"].update(steps=2, batch_size=4, warmup_steps=1)
    raw["probe"].update(n_per_prompt=2, n_sources=2, inference_steps=4, guidance_scales=[3.0], strengths=[0.5])
    raw.update(overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_load_and_match_the_main_skin_phrases():
    p = load_pretrain_params(ROOT / "pretrain/params.yaml")
    main = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["diffusion"]["skin_phrases"]
    assert p.skin_phrases == {int(k): v for k, v in main.items()}


def test_unknown_or_bad_params_are_rejected(tmp_path):
    with pytest.raises(ParamsError, match="unknown param typo"):
        load_pretrain_params(tiny_params(tmp_path, typo=1))
    with pytest.raises(ParamsError, match="model_size"):
        load_pretrain_params(tiny_params(tmp_path, model_size="huge"))


def test_pretrain_dvc_stages_declare_the_params_their_commands_read():
    stages = yaml.safe_load((ROOT / "pretrain/dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        command = stage["cmd"].split()[1]
        assert set(stage["params"]) == set(STAGE_PARAMS[command]), name


def test_helpers():
    factor = lr_lambda(10, 100)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0) and factor(100) == pytest.approx(0.1)
    assert light_dark_side(1, np.array([30.0, 20.0])).tolist() == [True, False]
    assert light_dark_side(6, np.array([0.0, 20.0])).tolist() == [True, False]
    assert light_dark_side(3, np.array([0.0])) is None
    rng = np.random.default_rng(0)
    assert caption_of(rng, "skin", "a dark-skinned") == "a photo of skin on a dark-skinned individual"
    assert caption_of(rng, "mole", "a dark-skinned").endswith("a mole on the skin of a dark-skinned individual")
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert structure_correlation(image, image) == pytest.approx(1.0)
    assert structure_correlation(image, np.full_like(image, 128)) == 0.0


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run all four pretraining commands on tiny settings; returns the output folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pretrain")
    params = str(tiny_params(tmp))
    invoke("pretrain-corpus", "--out", str(tmp / "corpus"), "--params", params)
    invoke("pretrain-vae", "--corpus", str(tmp / "corpus"), "--out", str(tmp / "vae"), "--params", params)
    invoke("pretrain-unet", "--corpus", str(tmp / "corpus"), "--vae", str(tmp / "vae"), "--out", str(tmp / "sd"),
           "--metrics", str(tmp / "train.json"), "--params", params)
    invoke("probe-base", "--model", str(tmp / "sd"), "--corpus", str(tmp / "corpus"),
           "--out-json", str(tmp / "probe.json"), "--out-md", str(tmp / "probe.md"), "--params", params)
    yield tmp
    torch.set_num_threads(threads)


def test_commands_write_corpus_model_and_probe(tiny_run):
    images = np.load(tiny_run / "corpus/images.npy")
    assert images.shape == (24, 16, 16, 3) and images.dtype == np.uint8
    assert json.loads((tiny_run / "train.json").read_text())["unet_steps"] == 2
    probe = json.loads((tiny_run / "probe.json").read_text())
    assert set(probe["txt2img"]["g3"]) == {str(f) for f in range(1, 7)}
    assert set(probe["img2img"]["g3"]["s0.5"]) == {"mean_ita", "dark_fraction", "structure_r"}
    assert set(probe["vae_round_trip"]) == {"mse", "structure_r"}
    assert "| guidance |" in (tiny_run / "probe.md").read_text()


def generate_offline(model_dir: Path, size: int, monkeypatch) -> np.ndarray:
    """Load `model_dir` with stock diffusers (hub disabled) and run img2img once; returns (size, size, 3) uint8."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert StableDiffusionPipeline.from_pretrained(model_dir).unet.dtype == torch.float32
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    source = Image.new("RGB", (size, size), (220, 180, 160))
    out = pipe("a photo of skin on a dark-skinned individual", image=source, strength=0.5, guidance_scale=3.0,
               num_inference_steps=4, generator=torch.Generator().manual_seed(0)).images[0]
    return np.asarray(out)


def test_saved_model_loads_offline_with_stock_diffusers(tiny_run, monkeypatch):
    assert generate_offline(tiny_run / "sd", 16, monkeypatch).shape == (16, 16, 3)


@pytest.mark.skipif(not (SHIPPED / "model_index.json").exists(), reason="models/base/mini-sd not trained yet")
def test_shipped_base_model_loads_offline_and_generates_64px(monkeypatch):
    size_mb = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) / 2**20
    assert size_mb < 25
    assert generate_offline(SHIPPED, 64, monkeypatch).shape == (64, 64, 3)
