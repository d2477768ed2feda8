"""Stage `generate`: `n_per_image` synthetic images for every generator training row (train + val).

Prompt: the condition's TI token (its name for strategies without TI) and a target skin type: the row's own
Fitzpatrick type if it is in the target group, else one drawn from the group. Every output k of source image
`md5hash` has its own seed `output_seed(seed, md5hash, k)`, which seeds both that draw and the CPU `torch.Generator`
of its diffusion, so any image can be regenerated alone and batching never changes it.

Output `data/synthetic/seed=<n>/`: `images/<md5hash>_<k>.png`, `manifest.csv` (MANIFEST_COLUMNS; `path` relative
to the folder; `strength` empty for txt2img), and `generation.json` (everything the pixels depend on).

Resuming. DVC deletes a stage's outputs before it runs, so resume state cannot live in the output folder (and
`persist: true` would also switch off DVC's run cache, which `dvc exp run --queue` ablations rely on). Work happens in
a hidden sibling `.<name>.partial/` that DVC does not know about: finished images are renamed into place (temp file
+ rename, so a killed run leaves only `.*.tmp` files, which a restart deletes); `generation.json` is written first,
and a restart whose `generation.json` differs (other params, split, base model or TI/LoRA files) starts afresh.
The plan is cut into fixed chunks of `batch_size` images; a restart regenerates every chunk that is not complete,
in the same composition, so the result equals an uninterrupted run's. The manifest is written last and the folder
is then renamed onto the output path: the output appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from m2m import io
from m2m.data.imagefolder import find_image, load_rgb
from m2m.diffusion.artifacts import load_lora, load_ti, uses_img2img, uses_lora, uses_ti
from m2m.diffusion.training import center_square, progress
from m2m.errors import M2MError
from m2m.params import GenerationParams

MANIFEST = "manifest.csv"
STAMP = "generation.json"
MANIFEST_COLUMNS = ["path", "source_md5hash", "label", "source_fitzpatrick_scale", "fitzpatrick_scale", "prompt",
                    "seed", "strength", "guidance_scale", "num_inference_steps", "strategy"]


def output_seed(seed: int, md5hash: str, k: int) -> int:
    """The seed of output k of image `md5hash` in repetition `seed`: 63 bits of SHA-256, independent of order."""
    digest = hashlib.sha256(f"{seed}/{md5hash}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def target_fst(own: int, target_group: tuple[int, ...], seed: int) -> int:
    """`own` if it is in the target group, else a member of the group drawn with `seed`."""
    if own in target_group:
        return own
    import numpy as np

    return sorted(target_group)[int(np.random.default_rng(seed).integers(len(target_group)))]


def prompt_of(params: GenerationParams, label: str, skin: str, tokens: dict[str, str] | None) -> str:
    """`generation.prompt` with the condition's token, or `vanilla_prompt` with its name when there is no TI."""
    if tokens is None:
        return params.vanilla_prompt.format(condition=label, skin=skin)
    return params.prompt.format(token=tokens[label], skin=skin)


def plan_generation(rows: pd.DataFrame, seed: int, params: GenerationParams, target_group: tuple[int, ...],
                    skin_phrases: dict[int, str], tokens: dict[str, str] | None) -> pd.DataFrame:
    """The manifest of every output, in split order then k (a pure function of its arguments)."""
    strength = params.strength if uses_img2img(params.strategy) else math.nan
    records = []
    for md5hash, label, fst in zip(rows.md5hash, rows.label, rows.fitzpatrick_scale, strict=True):
        for k in range(params.n_per_image):
            out_seed = output_seed(seed, md5hash, k)
            target = target_fst(int(fst), target_group, out_seed)
            if target not in skin_phrases:
                raise M2MError(f"diffusion.skin_phrases has no phrase for Fitzpatrick type {target}")
            records.append((f"images/{md5hash}_{k}.png", md5hash, label, int(fst), target,
                            prompt_of(params, label, skin_phrases[target], tokens), out_seed, strength,
                            params.guidance_scale, params.num_inference_steps, params.strategy))
    return pd.DataFrame.from_records(records, columns=MANIFEST_COLUMNS)


def generation_pipeline(base, strategy: str, ti_dir: Path, lora_dir: Path, conditions):
    """(the txt2img or img2img pipeline of `strategy` with its TI and LoRA loaded, condition -> token or None)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pipe(base) if uses_img2img(strategy) else base
    pipe.set_progress_bar_config(disable=True)
    tokens = load_ti(pipe, ti_dir, conditions) if uses_ti(strategy) else None
    if uses_lora(strategy):
        load_lora(pipe, lora_dir)
    return pipe, tokens


def render(pipe, chunk: pd.DataFrame, sources: list | None, params: GenerationParams, resolution: int) -> list:
    """The images of manifest rows `chunk` in one pipeline call (img2img from `sources`, else txt2img), resized
    to `output_size`."""
    from PIL import Image

    generators = [torch.Generator().manual_seed(int(s)) for s in chunk.seed]
    kwargs = {"prompt": list(chunk.prompt), "guidance_scale": params.guidance_scale,
              "num_inference_steps": params.num_inference_steps, "generator": generators, "output_type": "pil"}
    if sources is None:
        kwargs.update(height=resolution, width=resolution)
    else:
        kwargs.update(image=sources, strength=params.strength)
    size = (params.output_size, params.output_size)
    return [image.resize(size, Image.Resampling.LANCZOS) for image in pipe(**kwargs).images]


def source_image(images_dir: Path, md5hash: str, resolution: int):
    """The img2img input of a source row: its image, centre square at `resolution`."""
    return center_square(load_rgb(find_image(images_dir, md5hash)), resolution)


def file_digests(paths) -> dict[str, str]:
    """name -> SHA-256 of each file (the TI and LoRA artifacts the pixels depend on)."""
    return {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in sorted(map(str, paths))}


def partial_dir(out_dir: Path) -> Path:
    """The hidden work folder beside `out_dir`, where an interrupted run leaves its finished images."""
    return out_dir.with_name(f".{out_dir.name}.partial")


def open_work_dir(work: Path, stamp: dict) -> None:
    """Keep `work`'s finished images if it was started with the same `stamp`, else start it afresh."""
    stamp_file = work / STAMP
    if work.exists() and (not stamp_file.is_file() or json.loads(stamp_file.read_text()) != stamp):
        shutil.rmtree(work)
    (work / "images").mkdir(parents=True, exist_ok=True)
    for leftover in work.rglob(".*.tmp"):  # half-written files of a killed run
        leftover.unlink()
    if not stamp_file.is_file():
        io.write_json(stamp_file, stamp)


def publish(work: Path, out_dir: Path) -> None:
    """Rename the finished `work` folder onto `out_dir` (replacing an older one)."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        shutil.rmtree(old)
    os.replace(work, out_dir)


def save_png(image, path: Path) -> None:
    with io.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def run_generation(pipe, plan: pd.DataFrame, images_dir: Path, out_dir: Path, params: GenerationParams,
                   resolution: int, stamp: dict) -> int:
    """Render every row of `plan` not already finished, then write the manifest; return the images rendered now."""
    img2img = uses_img2img(params.strategy)
    if img2img:
        for md5hash in plan.source_md5hash.unique():
            find_image(images_dir, md5hash)  # a missing image fails now, not hours in
    work = partial_dir(Path(out_dir))
    plan_sha256 = hashlib.sha256(plan.to_csv(index=False).encode()).hexdigest()
    open_work_dir(work, {**stamp, "plan_sha256": plan_sha256})
    chunks = [plan.iloc[i:i + params.batch_size] for i in range(0, len(plan), params.batch_size)]
    todo = [c for c in chunks if not all((work / p).is_file() for p in c.path)]
    bar = progress(len(plan), f"generate {params.strategy}", unit="img")
    bar.update(len(plan) - sum(map(len, todo)))
    for chunk in todo:
        sources = [source_image(images_dir, h, resolution) for h in chunk.source_md5hash] if img2img else None
        for path, image in zip(chunk.path, render(pipe, chunk, sources, params, resolution), strict=True):
            if not (work / path).is_file():
                save_png(image, work / path)
        bar.update(len(chunk))
    bar.close()
    io.write_csv(work / MANIFEST, plan)
    publish(work, Path(out_dir))
    return sum(map(len, todo))
