"""Commands of the generator stages: textual-inversion, lora, generate (one repetition seed each).

A stage that `generation.strategy` does not need writes only `skipped.json` (see `m2m.diffusion.artifacts`).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from m2m.cli._app import stage
from m2m.cli.data import PARAMS
from m2m.params import load_params

SPLIT = typer.Option(..., "--split", help="split CSV of one repetition seed (data/splits/seed=<n>.csv)")
IMAGES = typer.Option(..., "--images", help="image folder of <md5hash>.<ext> files")
SEED = typer.Option(..., "--seed", help="repetition seed: seeds every random draw of the stage")


def _summary(stage_name: str, items: int, unit: str, seconds: float) -> None:
    typer.echo(f"{stage_name}: {items} {unit} in {seconds:.1f} s ({items / max(seconds, 1e-9):.2f} {unit}/s)")


def _runtime(diffusion):
    """(device, weight dtype) of the `diffusion` params; sets torch's CPU threads."""
    import torch

    from m2m.devices import resolve_device
    from m2m.diffusion.base import resolve_dtype

    if diffusion.threads:
        torch.set_num_threads(diffusion.threads)
    device = resolve_device(diffusion.device, "diffusion.device")
    return device, resolve_dtype(diffusion.dtype, device)


def _training_base(diffusion):
    """The base pipeline in float32 on the CPU; the trainers place and cast its parts."""
    import torch

    from m2m.diffusion.base import load_base_pipeline

    return load_base_pipeline(diffusion.base_model, torch.device("cpu"), torch.float32)


@stage("textual-inversion", params=("data.conditions", "diffusion", "textual_inversion", "generation.strategy"))
def textual_inversion(
    split: Path = SPLIT,
    images: Path = IMAGES,
    seed: int = SEED,
    out: Path = typer.Option(..., help="folder for <token>.safetensors files and tokens.json"),
    params_file: Path = PARAMS,
) -> None:
    """Learn one Textual Inversion token per condition on the split's train + val images."""
    from m2m.diffusion.artifacts import uses_ti, write_skipped
    from m2m.diffusion.textual_inversion import save_embeddings, train_textual_inversion
    from m2m.diffusion.training import make_accelerator, read_generator_rows

    p = load_params(params_file, "data.conditions", "diffusion", "textual_inversion", "generation.strategy")
    if not uses_ti(p.generation.strategy):
        write_skipped(out, "textual_inversion", p.generation.strategy)
        typer.echo(f"textual_inversion: skipped ({p.generation.strategy} uses no TI) -> {out}")
        return
    rows, ti = read_generator_rows(split, p.data.conditions), p.textual_inversion
    device, dtype = _runtime(p.diffusion)
    pipe, accelerator = _training_base(p.diffusion), make_accelerator(device, dtype, ti.gradient_accumulation_steps)
    start = time.perf_counter()
    embeddings = train_textual_inversion(pipe, rows, images, p.data.conditions, ti, p.diffusion.resolution, seed,
                                         accelerator, dtype)
    save_embeddings(out, embeddings, p.data.conditions)
    steps = ti.steps * (len(embeddings) if ti.per_token else 1)
    _summary("textual_inversion", steps, "steps", time.perf_counter() - start)


@stage("lora", params=("data.conditions", "diffusion", "lora", "generation.strategy"))
def lora(
    split: Path = SPLIT,
    images: Path = IMAGES,
    ti: Path = typer.Option(..., "--ti", help="folder from stage textual_inversion (its tokens go in the captions)"),
    seed: int = SEED,
    out: Path = typer.Option(..., help="folder for pytorch_lora_weights.safetensors"),
    params_file: Path = PARAMS,
) -> None:
    """Fine-tune LoRA on the UNet attention with captions of the learned tokens and the skin types."""
    from m2m.diffusion.artifacts import load_ti, uses_lora, uses_ti, write_skipped
    from m2m.diffusion.lora import captions_of, save_lora, train_lora
    from m2m.diffusion.training import make_accelerator, read_generator_rows

    p = load_params(params_file, "data.conditions", "diffusion", "lora", "generation.strategy")
    strategy = p.generation.strategy
    if not uses_lora(strategy):
        write_skipped(out, "lora", strategy)
        typer.echo(f"lora: skipped ({strategy} uses no LoRA) -> {out}")
        return
    rows = read_generator_rows(split, p.data.conditions)
    device, dtype = _runtime(p.diffusion)
    pipe, accelerator = _training_base(p.diffusion), make_accelerator(device, dtype, p.lora.gradient_accumulation_steps)
    tokens = load_ti(pipe, ti, p.data.conditions) if uses_ti(strategy) else {c: c for c in p.data.conditions}
    captions = captions_of(rows, p.lora.caption, tokens, p.diffusion.skin_phrases)
    start = time.perf_counter()
    train_lora(pipe, rows, images, captions, p.lora, p.diffusion.resolution, seed, accelerator, dtype)
    save_lora(accelerator.unwrap_model(pipe.unet), out)
    _summary("lora", p.lora.steps, "steps", time.perf_counter() - start)


@stage("generate", params=("target_group", "data", "diffusion", "generation"))
def generate(
    split: Path = SPLIT,
    images: Path = IMAGES,
    ti: Path = typer.Option(..., "--ti", help="folder from stage textual_inversion"),
    lora: Path = typer.Option(..., "--lora", help="folder from stage lora"),
    seed: int = SEED,
    out: Path = typer.Option(..., help="folder for images/, manifest.csv and generation.json"),
    params_file: Path = PARAMS,
) -> None:
    """Turn every train + val image into `n_per_image` synthetic images of the target skin types (resumable)."""
    import dataclasses

    from m2m.diffusion.artifacts import uses_lora, uses_ti
    from m2m.diffusion.base import load_base_pipeline
    from m2m.diffusion.generate import file_digests, generation_pipeline, plan_generation, run_generation
    from m2m.diffusion.training import read_generator_rows

    p = load_params(params_file, "target_group", "data", "diffusion", "generation")
    g = p.generation
    rows = read_generator_rows(split, p.data.conditions)
    target = p.data.light_fst if p.target_group == "light" else p.data.dark_fst
    device, dtype = _runtime(p.diffusion)
    pipe, tokens = generation_pipeline(load_base_pipeline(p.diffusion.base_model, device, dtype), g.strategy, ti,
                                       lora, p.data.conditions)
    plan = plan_generation(rows, seed, g, target, p.diffusion.skin_phrases, tokens)
    artifacts = [*(ti.glob("*.safetensors") if uses_ti(g.strategy) else []),
                 *(lora.glob("*.safetensors") if uses_lora(g.strategy) else [])]
    stamp = {"seed": seed, "generation": dataclasses.asdict(g), "base_model": p.diffusion.base_model,
             "resolution": p.diffusion.resolution, "device": device.type, "dtype": str(dtype).removeprefix("torch."),
             "artifacts_sha256": file_digests(artifacts)}
    start = time.perf_counter()
    rendered = run_generation(pipe, plan, images, out, g, p.diffusion.resolution, stamp)
    typer.echo(f"generate: {len(plan)} images ({len(plan) - rendered} kept from an interrupted run) -> {out}")
    _summary("generate", rendered, "images", time.perf_counter() - start)
