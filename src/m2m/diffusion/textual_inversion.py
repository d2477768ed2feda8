"""Stage `textual_inversion`: learn one placeholder token per condition on the generator's training rows.

Paper Section 2.2, algorithm of diffusers' textual_inversion.py: new tokens start from `initializer_token`'s
embedding; the text encoder, UNet and VAE stay frozen except the token-embedding table, whose other rows are
restored after every optimizer step, so only the placeholder rows change. `per_token` trains each token alone on its
condition's images (`steps` steps each); otherwise all tokens train jointly (`steps` steps in all).
Inputs: a split CSV, the image folder, the base pipeline. Output: see `m2m.diffusion.artifacts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from m2m import io
from m2m.diffusion.artifacts import TOKENS, embedding_file
from m2m.diffusion.training import (
    LatentCache,
    condition_token,
    denoising_loss,
    index_batches,
    load_pixels,
    progress,
    training_scheduler,
)
from m2m.errors import M2MError
from m2m.params import TextualInversionParams

ADAM_WEIGHT_DECAY = 1e-2  # diffusers' example default; the restore step keeps it off the frozen rows
ENCODE_BATCH = 16  # images per VAE call when filling the latent cache


def add_placeholder_tokens(tokenizer, text_encoder, conditions, initializer_token: str) -> dict[str, int]:
    """Add `condition_token(c)` for every condition, initialised to `initializer_token`; return condition -> id."""
    init_ids = tokenizer.encode(initializer_token, add_special_tokens=False)
    if len(init_ids) != 1:
        raise M2MError(f"textual_inversion.initializer_token {initializer_token!r} is {len(init_ids)} tokens; "
                       "it must be exactly one")
    tokens = {c: condition_token(c) for c in conditions}
    if len(set(tokens.values())) != len(tokens) or tokenizer.add_tokens(list(tokens.values())) != len(tokens):
        raise M2MError(f"placeholder tokens {sorted(tokens.values())} collide with each other or the vocabulary")
    text_encoder.resize_token_embeddings(len(tokenizer))
    ids = {c: tokenizer.convert_tokens_to_ids(t) for c, t in tokens.items()}
    with torch.no_grad():
        weight = text_encoder.get_input_embeddings().weight  # (V, D)
        for token_id in ids.values():
            weight[token_id] = weight[init_ids[0]]
    return ids


def restore_frozen_rows(weight: torch.Tensor, original: torch.Tensor, frozen: torch.Tensor) -> None:
    """Copy `original` back into every row of `weight` (V, D) where `frozen` (V,) is True."""
    with torch.no_grad():
        weight[frozen] = original[frozen].to(weight.dtype)


def caption_ids(tokenizer, tokens: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """input_ids: (C, T, 77) of every template filled with every token."""
    prompts = [template.format(token=token) for token in tokens for template in templates]
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # (C * T, 77)
    return ids.view(len(tokens), len(templates), -1)


def learning_rate(params: TextualInversionParams, num_processes: int) -> float:
    """The examples' `scale_lr`: the base rate times the effective batch size."""
    if params.scale_lr:
        return params.learning_rate * params.batch_size * params.gradient_accumulation_steps * num_processes
    return params.learning_rate


@dataclass(frozen=True)
class TrainingSet:
    """The cached inputs of every step: E cache entries (images, and their mirror images with `flip`)."""

    cache: LatentCache
    captions: torch.Tensor  # (C, T, 77) token ids: every template filled with every condition's token
    entry_condition: torch.Tensor  # (E,) condition index of every cache entry


def optimize_rows(text_encoder, unet, scheduler, data: TrainingSet, entries: torch.Tensor, rows: list[int],
                  params: TextualInversionParams, accelerator, generator: torch.Generator, desc: str) -> float:
    """Train embedding rows `rows` on cache entries `entries` (M,) for `params.steps` optimizer steps.

    Returns the loss of the last step.
    """
    weight = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight  # (V, D)
    frozen = torch.ones(len(weight), dtype=torch.bool, device=weight.device)
    frozen[rows] = False
    original = weight.detach().clone()  # keep the original embeddings as reference
    optimizer = torch.optim.AdamW([weight], lr=learning_rate(params, accelerator.num_processes),
                                  weight_decay=ADAM_WEIGHT_DECAY)
    optimizer = accelerator.prepare(optimizer)
    batches, bar, loss = index_batches(len(entries), params.batch_size, generator), progress(params.steps, desc), None
    while bar.n < params.steps:
        with accelerator.accumulate(text_encoder):
            index = entries[next(batches)]  # (B,) cache entries
            template = torch.randint(data.captions.shape[1], (len(index),), generator=generator)
            ids = data.captions[data.entry_condition[index], template].to(accelerator.device)  # (B, 77)
            text = text_encoder(ids)[0].to(unet.dtype)  # (B, 77, D)
            latents = data.cache.sample(index, generator).to(unet.dtype)  # (B, 4, h, w)
            loss = denoising_loss(unet, scheduler, latents, text, generator)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        restore_frozen_rows(weight, original, frozen)
        if accelerator.sync_gradients:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    return loss.item()


def _freeze_and_place(pipe, accelerator, weight_dtype: torch.dtype) -> None:
    """Frozen UNet and VAE in `weight_dtype`; the text encoder in float32 with only its token table trainable."""
    pipe.unet.requires_grad_(False).to(accelerator.device, weight_dtype)
    pipe.vae.requires_grad_(False).to(accelerator.device, weight_dtype)
    pipe.text_encoder.requires_grad_(False).to(accelerator.device, torch.float32)
    pipe.text_encoder.get_input_embeddings().weight.requires_grad_(True)


def train_textual_inversion(pipe, rows: pd.DataFrame, images_dir: Path, conditions: tuple[str, ...],
                            params: TextualInversionParams, resolution: int, seed: int, accelerator,
                            weight_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Learn the tokens of `conditions` from `rows` (md5hash, label); return token -> embedding (D,) float32."""
    missing = [c for c in conditions if c not in set(rows.label)]
    if missing:
        raise M2MError(f"no training images of condition(s) {', '.join(missing)}: cannot learn their tokens")
    token_ids = add_placeholder_tokens(pipe.tokenizer, pipe.text_encoder, conditions, params.initializer_token)
    _freeze_and_place(pipe, accelerator, weight_dtype)
    labels = list(rows.label) * (2 if params.flip else 1)  # one per cache entry
    data = TrainingSet(
        cache=LatentCache.encode(pipe.vae, load_pixels(images_dir, rows.md5hash, resolution), params.flip,
                                 ENCODE_BATCH),
        captions=caption_ids(pipe.tokenizer, [condition_token(c) for c in conditions], params.templates),
        entry_condition=torch.tensor([conditions.index(label) for label in labels]),
    )
    text_encoder, scheduler = accelerator.prepare(pipe.text_encoder), training_scheduler(pipe)
    generator = torch.Generator().manual_seed(seed)
    for group in ([[c] for c in conditions] if params.per_token else [list(conditions)]):
        entries = torch.tensor([i for i, label in enumerate(labels) if label in group])  # (M,)
        desc = f"TI {condition_token(group[0])}" if params.per_token else "TI (joint)"
        optimize_rows(text_encoder, pipe.unet, scheduler, data, entries, [token_ids[c] for c in group], params,
                      accelerator, generator, desc)
    weight = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight
    return {condition_token(c): weight[i].detach().float().cpu().clone() for c, i in token_ids.items()}


def save_embeddings(out_dir: Path, embeddings: dict[str, torch.Tensor], conditions: tuple[str, ...]) -> None:
    """Write one diffusers-format file per token ({token: (1, D)}) and tokens.json, replacing `out_dir` at once."""
    from safetensors.torch import save_file

    with io.atomic_dir(out_dir) as tmp:
        for token, vector in embeddings.items():
            save_file({token: vector[None].contiguous()}, tmp / embedding_file(token), metadata={"format": "pt"})
        io.write_json(tmp / TOKENS, {c: condition_token(c) for c in conditions})
