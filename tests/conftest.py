"""Shared fixtures of the generator tests: a tiny random-weight SD model saved as a diffusers directory, a few 16-px
images with their split, and a params.yaml pointing at them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_CONDITIONS = ("basal cell carcinoma", "psoriasis")
TINY_RESOLUTION = 16


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for the module: tiny models gain nothing from more, and on a shared 2-core machine
    two threads stall each other (a 10 ms tiny-UNet step took 1 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    """`build_pipeline("tiny")` with a VAE scaling factor, saved with `save_pretrained` (a local base_model)."""
    from m2m.diffusion.components import build_pipeline

    root = tmp_path_factory.mktemp("tiny-base")
    pipe = build_pipeline("tiny", root / "tokenizer-files", seed=0)
    pipe.vae.register_to_config(scaling_factor=0.5)
    pipe.save_pretrained(root / "tiny-sd")
    return root / "tiny-sd"


def write_generator_split(folder: Path) -> tuple[Path, Path]:
    """Six 16-px random RGB PNGs and a split CSV (4 train, 1 val, 1 test row); returns (split CSV, image folder)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "md5hash": [f"{i:032x}" for i in range(6)],
        "label": [TINY_CONDITIONS[i % 2] for i in range(6)],
        "fitzpatrick_scale": [1, 2, 5, 6, 2, 5],
        "role": ["train", "train", "train", "train", "val", "test"],
    })
    images = folder / "images"
    images.mkdir(parents=True)
    for md5hash in rows.md5hash:
        pixels = rng.integers(0, 256, (TINY_RESOLUTION, TINY_RESOLUTION, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{md5hash}.png")
    rows.to_csv(folder / "split.csv", index=False)
    return folder / "split.csv", images


@pytest.fixture(scope="session")
def tiny_generator_data(tmp_path_factory) -> tuple[Path, Path]:
    """(split CSV, image folder) shared by the generator tests; tests that damage them make their own."""
    return write_generator_split(tmp_path_factory.mktemp("generator-data"))


def deep_update(raw: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict):
            deep_update(raw.setdefault(key, {}), value)
        else:
            raw[key] = value
    return raw


def tiny_generator_params(base_model: Path, **sections) -> dict:
    """The repository's params.yaml shrunk to the tiny model (2 steps, 16 px), with `sections` merged in."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(raw, {
        "data": {"conditions": list(TINY_CONDITIONS)},
        "diffusion": {"base_model": str(base_model), "resolution": TINY_RESOLUTION, "device": "cpu",
                      "dtype": "float32", "threads": 1},
        "textual_inversion": {"steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
                              "learning_rate": 0.05},
        "lora": {"rank": 4, "alpha": 8, "steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
                 "learning_rate": 0.01},
        "generation": {"n_per_image": 2, "strength": 0.5, "guidance_scale": 2.0, "num_inference_steps": 4,
                       "batch_size": 3, "output_size": 24},
    })
    return deep_update(raw, sections)


@pytest.fixture
def write_params(tmp_path, tiny_base_model_dir):
    """write_params(**sections) -> a params.yaml in tmp_path for the tiny model, with `sections` merged in."""

    def write(**sections) -> Path:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(tiny_generator_params(tiny_base_model_dir, **sections)))
        return path

    return write
