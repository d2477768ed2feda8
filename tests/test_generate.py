"""Stage generate on a tiny model: seeds per output, stock-diffusers reproduction, determinism, resume, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_CONDITIONS, TINY_RESOLUTION, tiny_generator_params, write_generator_split
from m2m.cli import app
from m2m.diffusion import generate as gen
from m2m.diffusion.training import center_square, read_generator_rows
from m2m.params import GenerationParams

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SKIN = {1: "very light", 2: "light", 3: "m-light", 4: "m-dark", 5: "dark", 6: "very dark"}


def generation_params(**changes) -> GenerationParams:
    values = {"strategy": "img2img-ti+lora", "n_per_image": 3, "strength": 0.5, "guidance_scale": 2.0,
              "num_inference_steps": 4, "batch_size": 3, "output_size": 24, "prompt": "{token} on {skin}",
              "vanilla_prompt": "{condition} on {skin}"}
    return GenerationParams(**{**values, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_model_dir, tiny_generator_data):
    """(folder with params.yaml, ti/, lora/ and one finished generate run `out/`, CLI args of that run)."""
    root = tmp_path_factory.mktemp("generate")
    split, images = tiny_generator_data
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_generator_params(tiny_base_model_dir)))
    common = ["--split", str(split), "--images", str(images), "--seed", "7", "--params", str(root / "params.yaml")]
    runner = CliRunner()
    for args in (["textual-inversion", "--out", str(root / "ti")],
                 ["lora", "--ti", str(root / "ti"), "--out", str(root / "lora")]):
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
    gen_args = ["generate", "--ti", str(root / "ti"), "--lora", str(root / "lora"), *common]
    result = runner.invoke(app, [*gen_args, "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root, gen_args


def read_set(folder) -> tuple[pd.DataFrame, dict[str, bytes]]:
    manifest = pd.read_csv(folder / "manifest.csv", dtype={"source_md5hash": str})
    return manifest, {p: (folder / p).read_bytes() for p in manifest.path}


def test_plan_seeds_targets_and_prompts(tiny_generator_data):
    rows = read_generator_rows(tiny_generator_data[0], TINY_CONDITIONS)
    tokens = {"basal cell carcinoma": "<bcc>", "psoriasis": "<pso>"}
    plan = gen.plan_generation(rows, 7, generation_params(), (5, 6), SKIN, tokens)
    assert list(plan.columns) == gen.MANIFEST_COLUMNS and len(plan) == 5 * 3
    assert plan.seed.is_unique
    assert plan.seed[0] == gen.output_seed(7, rows.md5hash[0], 0) != gen.output_seed(8, rows.md5hash[0], 0)
    assert set(plan.fitzpatrick_scale) <= {5, 6}
    dark = plan[plan.source_fitzpatrick_scale.isin([5, 6])]
    assert (dark.fitzpatrick_scale == dark.source_fitzpatrick_scale).all()
    assert plan.prompt[0] == f"<bcc> on {SKIN[plan.fitzpatrick_scale[0]]}"
    vanilla = gen.plan_generation(rows, 7, generation_params(strategy="txt2img-vanilla"), (1, 2), SKIN, None)
    assert vanilla.prompt[0] == "basal cell carcinoma on very light" and vanilla.strength.isna().all()
    pd.testing.assert_frame_equal(plan, gen.plan_generation(rows, 7, generation_params(), (5, 6), SKIN, tokens))


def test_outputs_and_manifest(trained):
    root, _ = trained
    manifest, files = read_set(root / "out")
    assert len(manifest) == 5 * 2 and list(manifest.columns) == gen.MANIFEST_COLUMNS
    assert not (root / ".out.partial").exists()
    assert all(Image.open(root / "out" / p).size == (24, 24) for p in manifest.path)
    assert manifest.prompt.str.contains("<psoriasis>").any()


def stock_img2img(root, base_dir, rows: pd.DataFrame, images) -> list[np.ndarray]:
    """The manifest `rows` regenerated in one call of a stock diffusers img2img pipeline with our TI and LoRA."""
    from diffusers import StableDiffusionImg2ImgPipeline

    tokens = yaml.safe_load((root / "ti/tokens.json").read_text())
    stock = StableDiffusionImg2ImgPipeline.from_pretrained(base_dir)
    stock.load_textual_inversion([str(root / "ti" / f"{t.strip('<>')}.safetensors") for t in tokens.values()],
                                 token=list(tokens.values()))
    stock.load_lora_weights(str(root / "lora"))
    sources = [center_square(Image.open(images / f"{h}.png").convert("RGB"), TINY_RESOLUTION)
               for h in rows.source_md5hash]
    first = rows.iloc[0]
    out = stock(list(rows.prompt), image=sources, strength=first.strength, guidance_scale=first.guidance_scale,
                num_inference_steps=int(first.num_inference_steps),
                generator=[torch.Generator().manual_seed(int(s)) for s in rows.seed]).images
    return [np.asarray(image.resize((24, 24), Image.Resampling.LANCZOS)) for image in out]


def test_stock_img2img_pipeline_reproduces_manifest_rows(trained, tiny_base_model_dir, tiny_generator_data):
    """Exactly, called with the rows' batch (batch_size 3: rows 3-5); alone, within one grey level: PyTorch
    kernels are not batch-invariant, so a batched image and the same image alone differ by ~1e-6 before rounding."""
    root, _ = trained
    manifest, _ = read_set(root / "out")
    chunk = manifest.iloc[3:6]
    ours = [np.asarray(Image.open(root / "out" / p)) for p in chunk.path]
    for regenerated, image in zip(stock_img2img(root, tiny_base_model_dir, chunk, tiny_generator_data[1]), ours,
                                  strict=True):
        np.testing.assert_array_equal(regenerated, image)
    alone = stock_img2img(root, tiny_base_model_dir, chunk.iloc[1:2], tiny_generator_data[1])[0]
    assert np.abs(alone.astype(int) - ours[1]).max() <= 1


def test_two_runs_are_identical(trained, tmp_path):
    root, gen_args = trained
    result = CliRunner().invoke(app, [*gen_args, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    (m1, f1), (m2, f2) = read_set(root / "out"), read_set(tmp_path / "again")
    pd.testing.assert_frame_equal(m1, m2)
    assert f1 == f2


def test_interrupted_run_resumes_to_the_same_result(trained, tmp_path, monkeypatch):
    root, gen_args = trained
    out = tmp_path / "resumed"
    saved, real_save = [], gen.save_png

    def save_then_crash(image, path):
        if len(saved) == 4:  # mid-way through the second batch
            raise RuntimeError("simulated crash")
        real_save(image, path)
        saved.append(path)

    monkeypatch.setattr(gen, "save_png", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        CliRunner().invoke(app, [*gen_args, "--out", str(out)], catch_exceptions=False)
    partial = tmp_path / ".resumed.partial"
    assert len(list((partial / "images").glob("*.png"))) == 4 and not out.exists()
    (partial / "images" / ".half-written.png.x1.tmp").write_bytes(b"\x89PNG trunc")  # a kill -9 leftover
    monkeypatch.setattr(gen, "save_png", real_save)
    result = CliRunner().invoke(app, [*gen_args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 kept" not in result.output and "(3 kept from an interrupted run)" in result.output
    (m1, f1), (m2, f2) = read_set(root / "out"), read_set(out)
    pd.testing.assert_frame_equal(m1, m2)
    assert f1 == f2 and not partial.exists()


def test_killed_process_resumes_to_the_same_result(trained, tmp_path):
    root, gen_args = trained
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from m2m.cli import app; app()", *gen_args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = tmp_path / ".killed.partial/images"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (images.exists() and any(images.glob("*.png"))):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(list(images.glob("*.png"))) < 10 and not out.exists()  # killed mid-way
    result = CliRunner().invoke(app, [*gen_args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (m1, f1), (m2, f2) = read_set(root / "out"), read_set(out)
    pd.testing.assert_frame_equal(m1, m2)
    assert f1 == f2


def test_changed_params_start_afresh(trained, tmp_path):
    root, gen_args = trained
    partial = tmp_path / ".fresh.partial"
    (partial / "images").mkdir(parents=True)
    (partial / "generation.json").write_text('{"seed": -1}')
    (partial / "images/stale.png").write_bytes(b"stale")
    result = CliRunner().invoke(app, [*gen_args, "--out", str(tmp_path / "fresh")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "fresh/images/stale.png").exists()


@pytest.mark.parametrize("strategy", ["txt2img-vanilla", "img2img-vanilla"])
def test_vanilla_strategies_need_no_ti_or_lora(tmp_path, tiny_base_model_dir, tiny_generator_data, strategy):
    split, images = tiny_generator_data
    params = tmp_path / "params.yaml"
    raw = tiny_generator_params(tiny_base_model_dir, generation={"strategy": strategy, "n_per_image": 1})
    params.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["generate", "--split", str(split), "--images", str(images), "--seed", "0",
                                      "--ti", str(tmp_path / "none"), "--lora", str(tmp_path / "none"),
                                      "--params", str(params), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest, files = read_set(tmp_path / "out")
    assert len(files) == 5 and manifest.prompt[0].startswith("An image of basal cell carcinoma on the skin of")
    assert manifest.strength.isna().all() == strategy.startswith("txt2img")


def test_bad_inputs_fail_with_one_clear_error(tmp_path, tiny_base_model_dir):
    split, images = write_generator_split(tmp_path / "data")
    params = tmp_path / "params.yaml"

    def run(**sections):
        params.write_text(yaml.safe_dump(tiny_generator_params(tiny_base_model_dir, **sections)))
        return CliRunner().invoke(app, ["generate", "--split", str(split), "--images", str(images), "--seed", "0",
                                        "--ti", str(tmp_path), "--lora", str(tmp_path), "--params", str(params),
                                        "--out", str(tmp_path / "out")])

    result = run(generation={"strategy": "img2img-ti+loar"})
    assert result.exit_code == 2 and "generation.strategy 'img2img-ti+loar' is not one of" in result.output
    result = run(generation={"strategy": "img2img-ti"})
    assert result.exit_code == 2 and "tokens.json not found; run stage `textual_inversion` first" in result.output
    (images / f"{1:032x}.png").unlink()
    result = run(generation={"strategy": "img2img-vanilla"})
    assert result.exit_code == 2 and f"no image for md5hash {1:032x}" in result.output
    assert "Traceback" not in result.output
