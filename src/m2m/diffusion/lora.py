"""Stage `lora`: fine-tune LoRA matrices on the UNet attention with the learned tokens in the captions.

Paper Section 2.3, algorithm of diffusers' train_text_to_image_lora.py: peft LoRA (rank r) on `to_q, to_k, to_v,
to_out.0` through `unet.add_adapter`; UNet, VAE and text encoder frozen. Caption per image: `lora.caption` with
{token} = the condition's TI token (its name for strategies without TI) and {skin} = the phrase of its Fitzpatrick
type (`diffusion.skin_phrases`). The text encoder is frozen, so each distinct caption is encoded once; the VAE
latents are cached once. Output: `pytorch_lora_weights.safetensors` for stock `pipe.load_lora_weights(dir)`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from m2m import io
from m2m.diffusion.training import (
    LatentCache,
    denoising_loss,
    index_batches,
    load_pixels,
    progress,
    training_scheduler,
)
from m2m.errors import M2MError
from m2m.params import LoraParams

TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
ENCODE_BATCH = 16  # images or captions per frozen-encoder call when filling the caches


def captions_of(rows: pd.DataFrame, template: str, tokens: dict[str, str], skin_phrases: dict[int, str]) -> list[str]:
    """One caption per row: `template` with {token} = tokens[label], {skin} = skin_phrases[fitzpatrick_scale]."""
    missing = sorted(set(rows.fitzpatrick_scale) - set(skin_phrases))
    if missing:
        raise M2MError(f"diffusion.skin_phrases has no phrase for Fitzpatrick type(s) {missing}")
    return [template.format(token=tokens[label], skin=skin_phrases[fst])
            for label, fst in zip(rows.label, rows.fitzpatrick_scale, strict=True)]


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """encoder_hidden_states: (P, 77, D) of `prompts`, in the text encoder's dtype and device."""
    states = []
    for start in range(0, len(prompts), ENCODE_BATCH):
        ids = tokenizer(prompts[start:start + ENCODE_BATCH], padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids  # (b, 77)
        states.append(text_encoder(ids.to(text_encoder.device))[0])  # (b, 77, D)
    return torch.cat(states)


def add_lora(unet, params: LoraParams) -> list[torch.nn.Parameter]:
    """Attach a fresh LoRA adapter (Gaussian A, zero B) to the frozen UNet; return its float32 trainable params."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=params.rank, lora_alpha=params.alpha, init_lora_weights="gaussian",
                                target_modules=TARGET_MODULES))
    cast_training_params(unet, dtype=torch.float32)  # LoRA weights train in float32 even on a float16 UNet
    return [p for p in unet.parameters() if p.requires_grad]


def _caption_cache(pipe, captions: list[str], device, weight_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct caption states (P, 77, D), caption index of every row (N,))."""
    distinct = sorted(set(captions))
    pipe.text_encoder.requires_grad_(False).to(device, weight_dtype)
    states = encode_prompts(pipe.tokenizer, pipe.text_encoder, distinct)
    pipe.text_encoder.to("cpu")  # not needed on the device any more
    return states, torch.tensor([distinct.index(c) for c in captions])


def train_lora(pipe, rows: pd.DataFrame, images_dir: Path, captions: list[str], params: LoraParams,
               resolution: int, seed: int, accelerator, weight_dtype: torch.dtype) -> float:
    """Train LoRA on `pipe.unet` (in place) from `rows` and their `captions`; return the last step's loss."""
    device = accelerator.device
    states, row_caption = _caption_cache(pipe, captions, device, weight_dtype)
    pipe.vae.requires_grad_(False).to(device, weight_dtype)
    cache = LatentCache.encode(pipe.vae, load_pixels(images_dir, rows.md5hash, resolution), params.flip, ENCODE_BATCH)
    pipe.vae.to("cpu")
    entry_caption = row_caption.repeat(2 if params.flip else 1)  # (E,) caption of every cache entry
    trainable = add_lora(pipe.unet.to(device, weight_dtype), params)
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate)
    unet, optimizer = accelerator.prepare(pipe.unet, optimizer)
    scheduler, generator = training_scheduler(pipe), torch.Generator().manual_seed(seed)
    batches, bar, loss = index_batches(len(cache), params.batch_size, generator), progress(params.steps, "LoRA"), None
    while bar.n < params.steps:
        with accelerator.accumulate(unet):
            index = next(batches)  # (B,) cache entries
            text = states[entry_caption[index].to(states.device)]  # (B, 77, D) in weight_dtype
            latents = cache.sample(index, generator).to(weight_dtype)  # (B, 4, h, w)
            loss = denoising_loss(unet, scheduler, latents, text, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, params.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    return loss.item()


def save_lora(unet, out_dir: Path) -> None:
    """Write the UNet's LoRA in diffusers' format (`pytorch_lora_weights.safetensors`), replacing `out_dir` at once."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    with io.atomic_dir(out_dir) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=layers, safe_serialization=True,
            unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        )
