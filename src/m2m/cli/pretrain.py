"""Commands of the separate pretraining pipeline (pretrain/dvc.yaml) that builds the embedded base model.

They read `pretrain/params.yaml` (its own schema: `m2m.diffusion.pretrain.PretrainParams`), not the main params.
"""

from __future__ import annotations

from pathlib import Path

import typer

from m2m import io
from m2m.cli._app import stage

PARAMS = typer.Option(Path("pretrain/params.yaml"), "--params", help="pretraining params file")


def _setup(params_file: Path):
    """Load the pretraining params and pin torch's CPU threads."""
    import torch

    from m2m.diffusion.pretrain import load_pretrain_params

    p = load_pretrain_params(params_file)
    if p.threads > 0:
        torch.set_num_threads(p.threads)
    return p


def _read_corpus(corpus: Path):
    import numpy as np
    import pandas as pd

    return np.load(corpus / "images.npy"), pd.read_csv(corpus / "captions.csv")


@stage("pretrain-corpus", params=("seed", "skin_phrases", "corpus"))
def pretrain_corpus(
    out: Path = typer.Option(..., help="folder for images.npy and captions.csv"),
    params_file: Path = PARAMS,
) -> None:
    """Render the pretraining corpus: stand-in skin of all six types with generic lesions, captioned."""
    import numpy as np

    from m2m.diffusion.pretrain import load_pretrain_params, render_corpus

    images, table = render_corpus(load_pretrain_params(params_file))
    with io.atomic_dir(out) as tmp:
        np.save(tmp / "images.npy", images)
        table.to_csv(tmp / "captions.csv", index=False)
    typer.echo(f"pretrain-corpus: {len(table)} images {images.shape[1]} px -> {out}")


@stage("pretrain-vae", params=("seed", "model_size", "threads", "corpus", "vae"))
def pretrain_vae(
    corpus: Path = typer.Option(..., help="folder from pretrain-corpus"),
    out: Path = typer.Option(..., help="folder for the trained AutoencoderKL"),
    params_file: Path = PARAMS,
) -> None:
    """Train the VAE on the corpus and set its latent scaling factor."""
    from m2m.diffusion.pretrain import train_vae

    p = _setup(params_file)
    images, _ = _read_corpus(corpus)
    vae, loss = train_vae(images, p, log=typer.echo)
    with io.atomic_dir(out) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    typer.echo(f"pretrain-vae: final loss {loss:.5f}, scaling_factor {vae.config.scaling_factor:.4f} -> {out}")


@stage("pretrain-unet", params=("seed", "model_size", "threads", "unet"))
def pretrain_unet(
    corpus: Path = typer.Option(..., help="folder from pretrain-corpus"),
    vae_dir: Path = typer.Option(..., "--vae", help="folder from pretrain-vae"),
    out: Path = typer.Option(..., help="folder for the StableDiffusionPipeline"),
    metrics: Path = typer.Option(..., help="JSON with the final loss and training time"),
    params_file: Path = PARAMS,
) -> None:
    """Train UNet + text encoder on cached latents; save the whole pipeline (fp16)."""
    import time

    from diffusers import AutoencoderKL

    from m2m.diffusion.pretrain import assemble_pipeline, clip_tokenizer, save_pipeline, train_unet

    p = _setup(params_file)
    images, table = _read_corpus(corpus)
    vae, tokenizer = AutoencoderKL.from_pretrained(vae_dir).eval(), clip_tokenizer()
    start = time.perf_counter()
    unet, text_encoder, loss = train_unet(vae, tokenizer, list(table.caption), images, p, log=typer.echo)
    seconds = time.perf_counter() - start
    with io.atomic_dir(out) as tmp:
        save_pipeline(assemble_pipeline(vae, unet, text_encoder, tokenizer), tmp)
    io.write_json(metrics, {"unet_steps": p.unet.steps, "final_loss": round(loss, 5), "train_s": round(seconds)})
    typer.echo(f"pretrain-unet: final loss {loss:.4f} in {seconds:.0f} s -> {out}")


@stage("probe-base", params=("seed", "threads", "skin_phrases", "corpus", "probe"))
def probe_base(
    model: Path = typer.Option(..., help="StableDiffusionPipeline folder from pretrain-unet"),
    corpus: Path = typer.Option(..., help="folder from pretrain-corpus (img2img sources)"),
    out_json: Path = typer.Option(..., help="probe numbers (JSON)"),
    out_md: Path = typer.Option(..., help="probe tables (markdown)"),
    params_file: Path = PARAMS,
) -> None:
    """Probe skin-type conditioning: txt2img per skin phrase and img2img light -> dark at several strengths."""
    import torch
    from diffusers import StableDiffusionPipeline

    from m2m.diffusion.pretrain import probe, probe_markdown

    p = _setup(params_file)
    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images, table = _read_corpus(corpus)
    result = probe(pipe, images, table, p)
    io.write_json(out_json, result)
    io.write_text(out_md, probe_markdown(result, p))
    typer.echo(probe_markdown(result, p))
