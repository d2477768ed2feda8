"""Generator speed against the approach of the reference scripts, on one tiny model and one set of images (not CI).

- TI and LoRA training, seconds per optimizer step: ours (VAE latents cached once per stage, the cache build
  included) against diffusers' example scripts (every step re-encodes its batch through the VAE).
- Generation, images/s: ours (`generation.batch_size` images per pipeline call) against one source image per call
  (its `n_per_image` outputs together), as the original implementation called the pipeline.

    .venv/bin/python benchmarks/bench_generator.py [--size tiny] [--images 32] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from m2m.diffusion import lora as lora_module
from m2m.diffusion import textual_inversion as ti_module
from m2m.diffusion.base import load_base_pipeline
from m2m.diffusion.components import build_pipeline
from m2m.diffusion.generate import generation_pipeline, plan_generation, run_generation
from m2m.diffusion.training import LatentCache, make_accelerator
from m2m.params import GenerationParams, LoraParams, TextualInversionParams

CONDITIONS = ("basal cell carcinoma", "psoriasis")
SKIN = {1: "a very light-skinned", 2: "a light-skinned", 5: "a dark-skinned", 6: "a very dark-skinned"}
CPU = torch.device("cpu")


class EncodeEveryStep:
    """The examples' latents: each step encodes its batch through the VAE (same interface as `LatentCache`)."""

    def __init__(self, vae, pixels: torch.Tensor, flip: bool):
        self.vae, self.pixels = vae, torch.cat([pixels, pixels.flip(-1)]) if flip else pixels  # (E, 3, R, R)

    @classmethod
    def encode(cls, vae, pixels, flip, batch_size):  # LatentCache.encode's signature
        return cls(vae, pixels, flip)

    def __len__(self) -> int:
        return len(self.pixels)

    @torch.no_grad()
    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        latents = self.vae.encode(self.pixels[index].to(self.vae.device, self.vae.dtype)).latent_dist
        return latents.sample(generator) * self.vae.config.scaling_factor  # (B, 4, h, w)


def make_data(folder: Path, n: int, resolution: int) -> tuple[pd.DataFrame, Path]:
    """`n` random images and their generator rows (alternating conditions and skin types)."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    rows = pd.DataFrame({"md5hash": [f"{i:032x}" for i in range(n)],
                         "label": [CONDITIONS[i % 2] for i in range(n)],
                         "fitzpatrick_scale": [(1, 2, 5, 6)[i % 4] for i in range(n)], "role": "train"})
    for h in rows.md5hash:
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(
            folder / "images" / f"{h}.png")
    return rows, folder / "images"


def time_training(base_dir: Path, rows, images, resolution: int, steps: int, cache_class) -> tuple[float, float]:
    """Seconds per optimizer step of TI (joint) and LoRA with `cache_class` providing the latents."""
    ti_module.LatentCache = lora_module.LatentCache = cache_class
    ti = TextualInversionParams("skin", ("An image of {token}",), steps, 8, 1, 5e-3, True, False, True)
    lo = LoraParams(8, 8, "An image of {token} on the skin of {skin} individual", steps, 8, 1, 1e-4, 1.0, True)
    results = []
    for train in ("ti", "lora"):
        pipe = load_base_pipeline(str(base_dir), CPU, torch.float32)
        accelerator = make_accelerator(CPU, torch.float32, 1)
        start = time.perf_counter()
        if train == "ti":
            ti_module.train_textual_inversion(pipe, rows, images, CONDITIONS, ti, resolution, 0, accelerator,
                                              torch.float32)
        else:
            captions = lora_module.captions_of(rows, lo.caption, {c: c for c in CONDITIONS}, SKIN)
            lora_module.train_lora(pipe, rows, images, captions, lo, resolution, 0, accelerator, torch.float32)
        results.append((time.perf_counter() - start) / steps)
    ti_module.LatentCache = lora_module.LatentCache = LatentCache
    return results[0], results[1]


def time_generation(base_dir: Path, rows, images, resolution: int, batch_size: int, out: Path) -> float:
    """Images/s of img2img-vanilla generation with `batch_size` images per pipeline call."""
    params = GenerationParams("img2img-vanilla", 2, 0.5, 2.0, 20, batch_size, resolution, "{token} {skin}",
                              "An image of {condition} on the skin of {skin} individual")
    pipe, tokens = generation_pipeline(load_base_pipeline(str(base_dir), CPU, torch.float32), params.strategy,
                                       out, out, CONDITIONS)
    plan = plan_generation(rows, 0, params, (5, 6), SKIN, tokens)
    start = time.perf_counter()
    run_generation(pipe, plan, images, out, params, resolution, {"batch_size": batch_size})
    return len(plan) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "mini"), default="tiny", help="model size (m2m components)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="images per pipeline call (ours)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-generator-"))
    pipe = build_pipeline(args.size, work / "tokenizer", seed=0)
    pipe.vae.register_to_config(scaling_factor=0.5)
    pipe.save_pretrained(work / "tiny-sd")
    rows, images = make_data(work / "data", args.images, args.resolution)
    ours = time_training(work / "tiny-sd", rows, images, args.resolution, args.steps, LatentCache)
    theirs = time_training(work / "tiny-sd", rows, images, args.resolution, args.steps, EncodeEveryStep)
    batched = time_generation(work / "tiny-sd", rows, images, args.resolution, args.batch_size, work / "batched")
    single = time_generation(work / "tiny-sd", rows, images, args.resolution, 2, work / "single")
    print(f"\n{args.size} model, {args.images} images at {args.resolution} px, {args.steps} steps of batch 8, "
          f"{torch.get_num_threads()} thread(s)")
    for name, mine, other in (("TI", ours[0], theirs[0]), ("LoRA", ours[1], theirs[1])):
        print(f"{name:5s} s/step: cached latents {mine:.4f}, re-encode every step {other:.4f} "
              f"-> {other / mine:.2f}x faster")
    print(f"generate images/s: batch {args.batch_size} {batched:.2f}, one source per call {single:.2f} "
          f"-> {batched / single:.2f}x faster")


if __name__ == "__main__":
    main()
