"""Stage lora on a tiny model: LoRA changes the UNet, and its file round-trips through stock `load_lora_weights`."""

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_CONDITIONS, TINY_RESOLUTION
from m2m.cli import app
from m2m.diffusion.base import load_base_pipeline
from m2m.diffusion.lora import captions_of, save_lora, train_lora
from m2m.diffusion.training import make_accelerator, read_generator_rows
from m2m.errors import M2MError
from m2m.params import LoraParams

pytestmark = pytest.mark.usefixtures("single_torch_thread")
CPU = torch.device("cpu")
SKIN = {1: "a very light-skinned", 2: "a light-skinned", 5: "a dark-skinned", 6: "a very dark-skinned"}
CAPTION = "An image of {token} on the skin of {skin} individual"


def unet_output(unet) -> torch.Tensor:
    """noise prediction (2, 4, 8, 8) of the UNet on fixed inputs."""
    g = torch.Generator().manual_seed(1)
    latents, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(latents, torch.tensor([10, 500]), text).sample


def test_captions_name_token_and_skin_type(tiny_generator_data):
    rows = read_generator_rows(tiny_generator_data[0], TINY_CONDITIONS)
    tokens = {"basal cell carcinoma": "<basal-cell-carcinoma>", "psoriasis": "<psoriasis>"}
    captions = captions_of(rows, CAPTION, tokens, SKIN)
    assert captions[0] == "An image of <basal-cell-carcinoma> on the skin of a very light-skinned individual"
    assert captions[3] == "An image of <psoriasis> on the skin of a very dark-skinned individual"
    with pytest.raises(M2MError, match=r"no phrase for Fitzpatrick type\(s\) \[5\]"):
        captions_of(rows, CAPTION, tokens, {k: v for k, v in SKIN.items() if k != 5})


def test_lora_changes_outputs_and_round_trips_through_stock_loader(tmp_path, tiny_base_model_dir,
                                                                   tiny_generator_data):
    from diffusers import StableDiffusionPipeline

    split, images = tiny_generator_data
    pipe = load_base_pipeline(str(tiny_base_model_dir), CPU, torch.float32)
    before = unet_output(pipe.unet)
    rows = read_generator_rows(split, TINY_CONDITIONS)
    params = LoraParams(rank=4, alpha=8, caption=CAPTION, steps=3, batch_size=2, gradient_accumulation_steps=1,
                        learning_rate=0.02, max_grad_norm=1.0, flip=True)
    captions = captions_of(rows, CAPTION, {c: c for c in TINY_CONDITIONS}, SKIN)
    train_lora(pipe, rows, images, captions, params, TINY_RESOLUTION, 0, make_accelerator(CPU, torch.float32, 1),
               torch.float32)
    trained = unet_output(pipe.unet.eval())
    assert not torch.allclose(before, trained, atol=1e-4)
    save_lora(pipe.unet, tmp_path / "lora")
    assert [p.name for p in (tmp_path / "lora").iterdir()] == ["pytorch_lora_weights.safetensors"]
    stock = StableDiffusionPipeline.from_pretrained(tiny_base_model_dir)
    stock.load_lora_weights(str(tmp_path / "lora"))
    torch.testing.assert_close(unet_output(stock.unet), trained, atol=1e-5, rtol=1e-5)


def test_command_trains_without_ti_or_skips(tmp_path, write_params, tiny_generator_data):
    split, images = tiny_generator_data
    (tmp_path / "ti").mkdir()
    (tmp_path / "ti/skipped.json").write_text("{}")
    args = ["lora", "--split", str(split), "--images", str(images), "--ti", str(tmp_path / "ti"), "--seed", "0"]
    params = write_params(generation={"strategy": "img2img-lora"})
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "lora"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lora/pytorch_lora_weights.safetensors").is_file()
    params = write_params(generation={"strategy": "img2img-ti"})
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "skip"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "skip").iterdir()] == ["skipped.json"]
    params = write_params(generation={"strategy": "img2img-ti+lora"})
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "lora2"), "--params", str(params)])
    assert result.exit_code == 2 and "skipped by its strategy" in result.output
