"""Stage textual_inversion on a tiny model: only the placeholder rows learn, and stock diffusers loads the result."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_CONDITIONS, TINY_RESOLUTION, write_generator_split
from m2m.cli import app
from m2m.diffusion.base import load_base_pipeline
from m2m.diffusion.textual_inversion import add_placeholder_tokens, save_embeddings, train_textual_inversion
from m2m.diffusion.training import condition_token, make_accelerator, read_generator_rows
from m2m.errors import M2MError
from m2m.params import TextualInversionParams

pytestmark = pytest.mark.usefixtures("single_torch_thread")
CPU = torch.device("cpu")


def ti_params(**changes) -> TextualInversionParams:
    values = {"initializer_token": "skin", "templates": ("An image of {token}", "A photo of {token}"), "steps": 2,
              "batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 0.05, "scale_lr": True,
              "per_token": True, "flip": True}
    return TextualInversionParams(**{**values, **changes})


def train(base_dir, data, **changes):
    split, images = data
    pipe = load_base_pipeline(str(base_dir), CPU, torch.float32)
    original = pipe.text_encoder.get_input_embeddings().weight.detach().clone()  # (V, D)
    params = ti_params(**changes)
    embeddings = train_textual_inversion(pipe, read_generator_rows(split, TINY_CONDITIONS), images, TINY_CONDITIONS,
                                         params, TINY_RESOLUTION, 0, make_accelerator(CPU, torch.float32, 2),
                                         torch.float32)
    return pipe, original, embeddings


@pytest.mark.parametrize("per_token", [True, False])
def test_only_placeholder_rows_change(tiny_base_model_dir, tiny_generator_data, per_token):
    pipe, original, embeddings = train(tiny_base_model_dir, tiny_generator_data, per_token=per_token,
                                       gradient_accumulation_steps=2)
    weight = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert weight.shape[0] == original.shape[0] + len(TINY_CONDITIONS)
    assert torch.equal(weight[: len(original)], original)
    init = original[pipe.tokenizer.convert_tokens_to_ids("skin")]
    for condition in TINY_CONDITIONS:
        token = condition_token(condition)
        row = weight[pipe.tokenizer.convert_tokens_to_ids(token)]
        assert torch.equal(row, embeddings[token])
        assert not torch.allclose(row, init)


def test_stock_diffusers_loads_the_saved_tokens(tmp_path, tiny_base_model_dir, tiny_generator_data):
    from diffusers import StableDiffusionPipeline

    _, _, embeddings = train(tiny_base_model_dir, tiny_generator_data)
    save_embeddings(tmp_path / "ti", embeddings, TINY_CONDITIONS)
    tokens = json.loads((tmp_path / "ti/tokens.json").read_text())
    assert tokens == {c: condition_token(c) for c in TINY_CONDITIONS}
    stock = StableDiffusionPipeline.from_pretrained(tiny_base_model_dir)
    paths = [str(tmp_path / "ti" / f"{t.strip('<>')}.safetensors") for t in tokens.values()]
    stock.load_textual_inversion(paths, token=list(tokens.values()))
    for token in tokens.values():
        ids = stock.tokenizer(f"An image of {token}", add_special_tokens=False).input_ids
        assert ids[-1] == stock.tokenizer.convert_tokens_to_ids(token)
        assert torch.equal(stock.text_encoder.get_input_embeddings().weight[ids[-1]], embeddings[token])


def test_initializer_must_be_one_token(tiny_base_model_dir):
    pipe = load_base_pipeline(str(tiny_base_model_dir), CPU, torch.float32)
    with pytest.raises(M2MError, match="initializer_token"):
        add_placeholder_tokens(pipe.tokenizer, pipe.text_encoder, TINY_CONDITIONS, "basal cell carcinoma")


def test_command_writes_tokens_or_skips(tmp_path, write_params, tiny_generator_data):
    split, images = tiny_generator_data
    args = ["textual-inversion", "--split", str(split), "--images", str(images), "--seed", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ti"), "--params", str(write_params())])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "ti").iterdir()} == {"tokens.json", "basal-cell-carcinoma.safetensors",
                                                              "psoriasis.safetensors"}
    assert "steps/s" in result.output
    skip = write_params(generation={"strategy": "img2img-lora"})
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "skip"), "--params", str(skip)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "skip").iterdir()] == ["skipped.json"]


def test_bad_inputs_fail_with_one_clear_error(tmp_path, write_params):
    split, images = write_generator_split(tmp_path / "data")
    params = write_params()
    args = ["textual-inversion", "--split", str(split), "--images", str(images), "--seed", "0",
            "--out", str(tmp_path / "ti"), "--params", str(params)]
    (images / f"{0:032x}.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "not a readable image" in result.output
    (images / f"{0:032x}.png").unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"no image for md5hash {0:032x}" in result.output
    split.write_text(split.read_text().replace("psoriasis", "psoriasiss", 1))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "'psoriasiss' is not in data.conditions" in result.output
    assert "Traceback" not in result.output


def test_offline_hub_id_asks_for_a_local_directory():
    with pytest.raises(M2MError, match="set diffusion.base_model to a local diffusers directory"):
        load_base_pipeline("no-such-owner-m2m/no-such-model", CPU, torch.float32)
    with pytest.raises(M2MError, match="local diffusers directory"):
        load_base_pipeline("models/base/does-not-exist", CPU, torch.float32)
