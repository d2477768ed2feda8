"""Pretraining of the embedded base model: a small Stable-Diffusion-architecture model trained from scratch on CPU.

Fitzpatrick17k's role for real SD (a model that knows skin but not the study's lesions) is played here by a separate
procedural corpus (`m2m.data.miniworld.render_pretraining_image`): stand-in skin of all six Fitzpatrick types with
generic lesions, captioned with the skin-type words. Steps:

1. `render_corpus`: images (N, S, S, 3) uint8 and their captions.
2. `train_vae`: AutoencoderKL on random crops (reconstruction MSE + small KL); `scaling_factor` = 1 / std of latents.
3. `train_unet`: UNet + CLIP text encoder jointly on cached latents (noise-prediction MSE, SD's scaled-linear DDPM
   schedule, min-SNR weighting, offset noise, empty captions for classifier-free guidance, AdamW with warmup and
   cosine decay, EMA weights saved).
4. `save_pipeline`: a diffusers `StableDiffusionPipeline` folder (PNDM scheduler, CLIP tokenizer, fp16 weights).
5. `probe`: does the model follow skin-type prompts (txt2img) and move light skin to dark (img2img)?
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from m2m.params import ParamsError, _build

CAPTION_PLAIN = "a photo of skin on {skin} individual"
CAPTION_LESION = (
    "a photo of {lesion} on the skin of {skin} individual",
    "an image of {lesion} on the skin of {skin} individual",  # the main pipeline's prompt shape
)
LESION_PHRASES = {
    "mole": "a mole", "freckles": "freckles", "scar": "a scar", "bruise": "a bruise", "macule": "a macule",
}


# ----------------------------------------------------------------------------------------------------- params


@dataclass(frozen=True)
class CorpusParams:
    """The pretraining corpus: how many images, how large, what share shows plain skin."""

    n_images: int
    image_size: int
    plain_fraction: float


@dataclass(frozen=True)
class VaeParams:
    steps: int
    batch_size: int
    crop_size: int
    learning_rate: float
    kl_weight: float
    init_logvar: float
    detail_weight: float
    decoder_steps: int
    decoder_batch_size: int


@dataclass(frozen=True)
class UnetParams:
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    min_snr_gamma: float
    offset_noise: float
    uncond_probability: float
    ema_decay: float


@dataclass(frozen=True)
class ProbeParams:
    n_per_prompt: int
    n_sources: int
    inference_steps: int
    guidance_scales: tuple[float, ...]
    strengths: tuple[float, ...]
    dark_fst: int


@dataclass(frozen=True)
class PretrainParams:
    """pretrain/params.yaml: the embedded base model's recipe."""

    seed: int
    model_size: str
    threads: int
    skin_phrases: dict[int, str]
    corpus: CorpusParams
    vae: VaeParams
    unet: UnetParams
    probe: ProbeParams

    def __post_init__(self):
        from m2m.diffusion.components import SIZES

        if self.model_size not in SIZES:
            raise ParamsError(f"model_size {self.model_size!r} is not one of {', '.join(SIZES)}")
        if sorted(self.skin_phrases) != list(range(1, 7)):
            raise ParamsError("skin_phrases must map each Fitzpatrick type 1..6 to a phrase")
        if self.vae.crop_size > self.corpus.image_size:
            raise ParamsError(f"vae.crop_size {self.vae.crop_size} exceeds corpus.image_size {self.corpus.image_size}")


def load_pretrain_params(path: Path | str) -> PretrainParams:
    """Read and validate pretrain/params.yaml (unknown or missing keys raise ParamsError)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    try:
        return _build(PretrainParams, raw, "")
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------------------------------- corpus


def caption_of(rng: np.random.Generator, lesion: str, skin_phrase: str) -> str:
    """A caption naming the skin type (and the generic lesion, if any)."""
    if lesion == "skin":
        return CAPTION_PLAIN.format(skin=skin_phrase)
    template = CAPTION_LESION[int(rng.integers(len(CAPTION_LESION)))]
    return template.format(lesion=LESION_PHRASES[lesion], skin=skin_phrase)


def render_corpus(p: PretrainParams):
    """The pretraining corpus: (images (N, S, S, 3) uint8, table with columns index, fst, lesion, caption)."""
    import pandas as pd

    from m2m.data.miniworld import GENERIC_LESIONS, render_pretraining_image

    rng = np.random.default_rng(p.seed)
    n, size = p.corpus.n_images, p.corpus.image_size
    fst = rng.integers(1, 7, n)
    lesion_p = np.full(len(GENERIC_LESIONS), (1 - p.corpus.plain_fraction) / (len(GENERIC_LESIONS) - 1))
    lesion_p[GENERIC_LESIONS.index("skin")] = p.corpus.plain_fraction
    lesions = rng.choice(GENERIC_LESIONS, n, p=lesion_p)
    images = np.stack([np.asarray(render_pretraining_image(i, fst[i], size, lesions[i])) for i in range(n)])
    captions = [caption_of(rng, lesions[i], p.skin_phrases[int(fst[i])]) for i in range(n)]
    table = pd.DataFrame({"index": np.arange(n), "fst": fst, "lesion": lesions, "caption": captions})
    return images, table


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------- training


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to 0.1 at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def adamw(parameters: list, learning_rate: float, weight_decay: float, warmup: int, total: int):
    """AdamW with `lr_lambda`'s warmup-then-cosine schedule: (optimizer, scheduler)."""
    import torch

    opt = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))


def optimizer_step(loss, opt, sched, clip_norm: float | None = None) -> None:
    """Backpropagate `loss`, optionally clip the optimised parameters' gradient norm, step, advance the schedule."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_([q for group in opt.param_groups for q in group["params"]], clip_norm)
    opt.step()
    sched.step()


def reconstruction_loss(recon, target, detail_weight: float):
    """MSE weighted towards pixels that differ from the image's mean colour (lesions), normalised by the weights.

    recon, target: (B, 3, H, W) in [-1, 1]. Plain skin dominates every image; unweighted, the VAE learnt the colour
    long before any lesion.
    """
    weight = 1 + detail_weight * (target - target.mean(dim=(2, 3), keepdim=True)).abs().mean(dim=1, keepdim=True)
    return ((recon - target) ** 2 * weight).mean() / weight.mean()


def train_vae(images: np.ndarray, p: PretrainParams, log: Callable[[str], None] = print):
    """Train an AutoencoderKL on random crops of `images` (N, S, S, 3) uint8; set its `scaling_factor`.

    Returns the VAE in eval mode and the final loss.
    """
    import torch

    from m2m.diffusion.components import SIZES, build_vae

    torch.manual_seed(p.seed)
    vae = build_vae(SIZES[p.model_size]).train()
    with torch.no_grad():  # start with a narrow posterior: at std 1 the latents carried only the skin colour
        vae.quant_conv.bias[vae.config.latent_channels :] = p.vae.init_logvar
    pixels = to_tensor(images)  # (N, 3, S, S) in [-1, 1]
    opt, sched = adamw(list(vae.parameters()), p.vae.learning_rate, 0.0, max(1, p.vae.steps // 20), p.vae.steps)
    gen = torch.Generator().manual_seed(p.seed)
    c, s = p.vae.crop_size, p.corpus.image_size
    loss = torch.tensor(float("nan"))
    for step in range(p.vae.steps):
        idx = torch.randint(len(pixels), (p.vae.batch_size,), generator=gen)
        top, left = torch.randint(s - c + 1, (2,), generator=gen).tolist()
        batch = pixels[idx, :, top : top + c, left : left + c]  # (B, 3, c, c)
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = reconstruction_loss(recon, batch, p.vae.detail_weight) + p.vae.kl_weight * posterior.kl().mean()
        optimizer_step(loss, opt, sched)
        if step % 100 == 0 or step == p.vae.steps - 1:
            log(f"vae step {step} loss {loss.item():.5f}")
    vae.eval()
    latents = encode_latents(vae, images)[0]
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return finetune_decoder(vae, images, p, log) if p.vae.decoder_steps else (vae, float(loss.item()))


def finetune_decoder(vae, images: np.ndarray, p: PretrainParams, log: Callable[[str], None] = print):
    """Fine-tune the decoder on whole images with the encoder frozen; returns (VAE in eval mode, final loss).

    Crop training leaves the decoder's mid-block attention unused to full-size latents (it drew bands across the
    image); a frozen encoder keeps the latent space, its scaling factor and any UNet trained on it unchanged.
    """
    import torch

    torch.manual_seed(p.seed + 2)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for param in trainable:
        param.requires_grad_(True)
    vae.decoder.train()
    pixels = to_tensor(images)  # (N, 3, S, S) in [-1, 1]
    steps = p.vae.decoder_steps
    opt, sched = adamw(trainable, p.vae.learning_rate, 0.0, max(1, steps // 20), steps)
    gen = torch.Generator().manual_seed(p.seed + 2)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        batch = pixels[torch.randint(len(pixels), (p.vae.decoder_batch_size,), generator=gen)]
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.sample(generator=gen)
        loss = reconstruction_loss(vae.decode(latents).sample, batch, p.vae.detail_weight)
        optimizer_step(loss, opt, sched)
        if step % 100 == 0 or step == steps - 1:
            log(f"vae decoder step {step} loss {loss.item():.5f}")
    vae.requires_grad_(True)
    return vae.eval(), float(loss.item())


def encode_latents(vae, images: np.ndarray, batch_size: int = 256):
    """Posterior mean and std of `images` (N, S, S, 3) uint8: two (N, C, S/f, S/f) tensors, unscaled."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            dist = vae.encode(to_tensor(images[start : start + batch_size])).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, captions: list[str]):
    """Token ids (N, 77) of `captions`, padded as SD's pipelines pad them."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def min_snr_weights(scheduler, timesteps, gamma: float):
    """Min-SNR-gamma loss weights for epsilon prediction: min(SNR, gamma) / SNR, shape (B,)."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return snr.clamp(max=gamma) / snr


class Ema:
    """Exponential moving average of a module's parameters (decay warms up as in diffusers' EMAModel)."""

    def __init__(self, module, decay: float):
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay

    def update(self, module, step: int) -> None:
        import torch

        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema_p, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
                ema_p.lerp_(p, 1 - d)


def diffusion_loss(unet, text_encoder, scheduler, latents, ids, p: UnetParams, gen):
    """One batch's noise-prediction loss. latents: (B, 4, h, w) scaled; ids: (B, 77) token ids."""
    import torch

    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen)
    noise += p.offset_noise * torch.randn((b, latents.shape[1], 1, 1), generator=gen)  # lets global tone move
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, text_encoder(ids)[0]).sample
    per_item = ((pred - noise) ** 2).mean(dim=(1, 2, 3))  # (B,)
    return (per_item * min_snr_weights(scheduler, t, p.min_snr_gamma)).mean()


def train_unet(vae, tokenizer, captions: list[str], images: np.ndarray, p: PretrainParams,
               log: Callable[[str], None] = print):
    """Train UNet + text encoder on the corpus' cached latents; returns (EMA unet, EMA text encoder, final loss)."""
    import torch
    from diffusers import DDPMScheduler

    from m2m.diffusion.components import SIZES, build_text_encoder, build_unet, sd_scheduler_config

    torch.manual_seed(p.seed)
    size = SIZES[p.model_size]
    unet, text_encoder = build_unet(size).train(), build_text_encoder(size).train()
    scheduler = DDPMScheduler.from_config(sd_scheduler_config())  # same betas as the PNDM sampler
    mean, std = encode_latents(vae, images)
    scale = vae.config.scaling_factor
    ids, empty = tokenize(tokenizer, captions), tokenize(tokenizer, [""])
    opt, sched = adamw([*unet.parameters(), *text_encoder.parameters()], p.unet.learning_rate, 1e-2,
                       p.unet.warmup_steps, p.unet.steps)
    ema_unet, ema_text = Ema(unet, p.unet.ema_decay), Ema(text_encoder, p.unet.ema_decay)
    gen = torch.Generator().manual_seed(p.seed + 1)
    running, start = None, time.perf_counter()
    for step in range(p.unet.steps):
        idx = torch.randint(len(mean), (p.unet.batch_size,), generator=gen)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale  # (B, 4, h, w)
        drop = torch.rand(len(idx), generator=gen) < p.unet.uncond_probability
        batch_ids = torch.where(drop[:, None], empty, ids[idx])
        loss = diffusion_loss(unet, text_encoder, scheduler, latents, batch_ids, p.unet, gen)
        optimizer_step(loss, opt, sched, clip_norm=1.0)
        ema_unet.update(unet, step)
        ema_text.update(text_encoder, step)
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if step % 100 == 0 or step == p.unet.steps - 1:
            log(f"unet step {step} loss {loss.item():.4f} (avg {running:.4f}) "
                f"lr {sched.get_last_lr()[0]:.2e} {time.perf_counter() - start:.0f} s")
    return ema_unet.shadow, ema_text.shadow, float(running)


# ----------------------------------------------------------------------------------------------------- saving


def assemble_pipeline(vae, unet, text_encoder, tokenizer):
    """A `StableDiffusionPipeline` of trained parts with SD 2.1's PNDM scheduler and no safety checker."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from m2m.diffusion.components import sd_scheduler_config

    pipe = StableDiffusionPipeline(
        vae=vae.eval(), unet=unet.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
        scheduler=PNDMScheduler(**sd_scheduler_config()), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, out_dir: Path) -> None:
    """Save `pipe` (safetensors) loadable by stock `from_pretrained` offline: UNet and VAE in fp16, text encoder fp32.

    diffusers loads fp16 weights into fp32 models by default, but transformers 5 keeps the stored dtype, so an fp16
    text encoder would meet an fp32 UNet; the text encoder (3.2M parameters, mostly its embedding) stays fp32.
    """
    import torch

    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    pipe.unet.to(torch.float32)
    pipe.vae.to(torch.float32)


def clip_tokenizer():
    """SD 2.1's CLIP tokenizer, built from open_clip's BPE file in a scratch folder."""
    from m2m.diffusion.components import build_clip_tokenizer

    with tempfile.TemporaryDirectory() as work:
        return build_clip_tokenizer(Path(work))


# ----------------------------------------------------------------------------------------------------- probe


def light_dark_side(fst: int, ita: np.ndarray) -> np.ndarray | None:
    """Whether each ITA is on the prompt's side (> 28 for types 1-2, < 10 for 5-6); None for types 3-4."""
    if fst in (1, 2):
        return ita > 28.0
    if fst in (5, 6):
        return ita < 10.0
    return None


def structure_correlation(source: np.ndarray, output: np.ndarray, sigma: float = 1.5) -> float:
    """Pearson r between the smoothed L* maps of two (H, W, 3) uint8 images: 1 = same layout, ~0 = unrelated.

    Smoothing (Gaussian, `sigma` px) compares lesions and lighting rather than pixel grain, which img2img redraws.
    """
    from scipy.ndimage import gaussian_filter

    from m2m.data.ita import srgb_to_lab

    a, b = (gaussian_filter(srgb_to_lab(img / 255.0)[..., 0], sigma).ravel() for img in (source, output))
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def _generators(seed: int, n: int):
    import torch

    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def probe_txt2img(pipe, p: PretrainParams, guidance: float) -> dict[int, dict[str, float]]:
    """Per Fitzpatrick type: mean ITA and share on the right light/dark side of txt2img samples of its phrase."""
    from m2m.data.ita import ita_of_image

    size = p.corpus.image_size
    result = {}
    for fst, phrase in sorted(p.skin_phrases.items()):
        n = p.probe.n_per_prompt
        images = pipe([CAPTION_PLAIN.format(skin=phrase)] * n, height=size, width=size, guidance_scale=guidance,
                      num_inference_steps=p.probe.inference_steps, generator=_generators(p.seed, n),
                      output_type="np").images
        ita = np.array([ita_of_image(np.round(img * 255).astype(np.uint8)) for img in images])
        side = light_dark_side(fst, ita)
        result[fst] = {"mean_ita": float(ita.mean()), **({} if side is None else {"right_side": float(side.mean())})}
    return result


def probe_img2img(pipe, sources: np.ndarray, prompts: list[str], p: PretrainParams, guidance: float,
                  strength: float) -> dict[str, float]:
    """img2img of light-skin `sources` (N, S, S, 3) uint8 with dark-skin `prompts`: tone reached vs layout kept."""
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    from m2m.data.ita import ita_of_image

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    out = img2img(prompts, image=[Image.fromarray(s) for s in sources], strength=strength, guidance_scale=guidance,
                  num_inference_steps=p.probe.inference_steps, generator=_generators(p.seed, len(sources)),
                  output_type="np").images
    out = np.round(out * 255).astype(np.uint8)
    ita = np.array([ita_of_image(img) for img in out])
    return {
        "mean_ita": float(ita.mean()),
        "dark_fraction": float((ita < 10.0).mean()),
        "structure_r": float(np.mean([structure_correlation(s, o) for s, o in zip(sources, out, strict=True)])),
    }


def vae_round_trip(vae, images: np.ndarray) -> dict[str, float]:
    """How much of `images` (N, S, S, 3) uint8 survives encode -> decode (posterior mean): MSE in [-1, 1] units and
    structure r (1 = lesions and lighting kept; a VAE that keeps only the skin colour scores near 0)."""
    import torch

    with torch.no_grad():
        recon = vae.decode(encode_latents(vae, images)[0]).sample.clamp(-1, 1)  # (N, 3, S, S)
    out = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return {
        "mse": float(((recon - to_tensor(images)) ** 2).mean()),
        "structure_r": float(np.mean([structure_correlation(a, b) for a, b in zip(images, out, strict=True)])),
    }


def probe(pipe, images: np.ndarray, table, p: PretrainParams) -> dict:
    """All probe numbers as a nested dict: txt2img per guidance, img2img per guidance and strength."""
    from m2m.data.ita import ita_of_image

    light = table.index[table.fst.isin([1, 2])][: p.probe.n_sources]
    rng = np.random.default_rng(p.seed)
    prompts = [caption_of(rng, table.lesion[i], p.skin_phrases[p.probe.dark_fst]) for i in light]
    sources = images[light]
    result = {"source_mean_ita": float(np.mean([ita_of_image(s) for s in sources])), "txt2img": {}, "img2img": {},
              "vae_round_trip": vae_round_trip(pipe.vae, sources)}
    for g in p.probe.guidance_scales:
        result["txt2img"][f"g{g:g}"] = probe_txt2img(pipe, p, g)
        result["img2img"][f"g{g:g}"] = {f"s{s:g}": probe_img2img(pipe, sources, prompts, p, g, s)
                                        for s in p.probe.strengths}
    return result


def probe_markdown(result: dict, p: PretrainParams) -> str:
    """The probe's numbers as two markdown tables."""
    vae = result["vae_round_trip"]
    lines = ["# Probe of the embedded base model (procedural stand-in data)", "",
             f"VAE round trip of the img2img sources: MSE {vae['mse']:.4f} (pixels in [-1, 1]), structure r "
             f"{vae['structure_r']:.2f} (1 = lesions kept).", "",
             "## txt2img: mean ITA (share on the right side: ITA > 28 for types 1-2, < 10 for types 5-6)", "",
             "| guidance | " + " | ".join(f"type {f}" for f in sorted(p.skin_phrases)) + " |",
             "|---" * (len(p.skin_phrases) + 1) + "|"]
    for g, per_fst in result["txt2img"].items():
        cells = [f"{v['mean_ita']:.0f}" + (f" ({v['right_side']:.2f})" if "right_side" in v else "")
                 for _, v in sorted(per_fst.items())]
        lines.append(f"| {g[1:]} | " + " | ".join(cells) + " |")
    lines += ["", f"## img2img from light-skin sources (mean ITA {result['source_mean_ita']:.0f}) with the type-"
              f"{p.probe.dark_fst} prompt: mean ITA / share with ITA < 10 / structure r", "",
              "| guidance | " + " | ".join(f"strength {s:g}" for s in p.probe.strengths) + " |",
              "|---" * (len(p.probe.strengths) + 1) + "|"]
    for g, per_s in result["img2img"].items():
        cells = [f"{v['mean_ita']:.0f} / {v['dark_fraction']:.2f} / {v['structure_r']:.2f}" for v in per_s.values()]
        lines.append(f"| {g[1:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
