"""What Textual Inversion and LoRA training share: the generator's training rows, cached VAE latents, the
denoising loss, batch sampling and the `Accelerator`.

Both trainers follow diffusers' example scripts (textual_inversion.py, train_text_to_image_lora.py) with one change
of shape: the frozen VAE encodes every training image once per stage (both horizontal flips when flipping), and each
step draws its latents from the cached posterior (mean + std * noise), the same distribution the examples sample by
re-encoding the images every step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from m2m.data.imagefolder import find_image, load_rgb
from m2m.data.splits import read_split
from m2m.errors import M2MError

GENERATOR_ROLES = ("train", "val")  # the generator trains on the whole training set (train + val)


def condition_token(condition: str) -> str:
    """The placeholder token of a condition: "basal cell carcinoma" -> "<basal-cell-carcinoma>"."""
    return "<" + re.sub(r"[^a-z0-9]+", "-", condition.lower()).strip("-") + ">"


def read_generator_rows(split_csv: Path | str, conditions: tuple[str, ...]) -> pd.DataFrame:
    """The train and val rows of a split (in file order), checked against `conditions` (data.conditions)."""
    split = read_split(split_csv)
    unknown = split[~split.label.isin(conditions)]
    if len(unknown):
        row = unknown.index[0]
        raise M2MError(f"{split_csv} row {row + 2}: condition {unknown.label.iloc[0]!r} is not in data.conditions")
    bad_fst = split[~split.fitzpatrick_scale.isin(range(1, 7))]
    if len(bad_fst):
        raise M2MError(f"{split_csv} row {bad_fst.index[0] + 2}: fitzpatrick_scale must be 1..6")
    rows = split[split.role.isin(GENERATOR_ROLES)].reset_index(drop=True)
    if rows.empty:
        raise M2MError(f"{split_csv}: no train or val rows to train the generator on")
    return rows


def center_square(image, resolution: int):
    """Resize the shorter side to `resolution` (bicubic), then crop the centre square, as the examples do."""
    from PIL import Image

    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def load_pixels(images_dir: Path | str, md5hashes, resolution: int) -> torch.Tensor:
    """pixel_values: (N, 3, R, R) float32 in [-1, 1] for the images of `md5hashes` (R = resolution)."""
    import numpy as np

    arrays = [np.asarray(center_square(load_rgb(find_image(images_dir, h)), resolution)) for h in md5hashes]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, R, R) uint8
    return pixels.float() / 127.5 - 1.0


class LatentCache:
    """The VAE posterior of every training image, encoded once: sample latents for any batch without the VAE.

    With `flip`, entry i + N is the mirror image of entry i, so indices run over 2N entries.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scaling_factor: float):
        self.mean, self.std, self.scaling_factor = mean, std, scaling_factor  # each (N or 2N, 4, h, w) float32

    @classmethod
    @torch.no_grad()
    def encode(cls, vae, pixels: torch.Tensor, flip: bool, batch_size: int) -> LatentCache:
        """pixels: (N, 3, R, R) in [-1, 1] -> a cache of (N or 2N, 4, R/f, R/f) posteriors (f = VAE factor)."""
        if flip:
            pixels = torch.cat([pixels, pixels.flip(-1)])  # (2N, 3, R, R)
        means, stds = [], []
        for batch in pixels.split(batch_size):
            posterior = vae.encode(batch.to(vae.device, vae.dtype)).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
        return cls(torch.cat(means), torch.cat(stds), vae.config.scaling_factor)

    def __len__(self) -> int:
        return len(self.mean)

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) for entries `index` (B,), drawn from the cached posteriors."""
        mean, std = self.mean[index.to(self.mean.device)], self.std[index.to(self.std.device)]
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        return (mean + std * eps) * self.scaling_factor


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches (batch_size,) of indices into n items: shuffled epochs, as a DataLoader with shuffle=True."""
    stream = torch.empty(0, dtype=torch.long)
    while True:
        while len(stream) < batch_size:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        yield stream[:batch_size]
        stream = stream[batch_size:]


def denoising_loss(unet, scheduler, latents: torch.Tensor, text: torch.Tensor, generator: torch.Generator):
    """The LDM objective: MSE between the UNet's prediction and the noise (or velocity) at a random timestep.

    latents: (B, 4, h, w) scaled; text: (B, 77, D) encoder hidden states; both in the UNet's weight dtype.
    """
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    steps = steps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, steps)  # (B, 4, h, w)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, steps)
    else:
        target = noise
    prediction = unet(noisy, steps, text).sample
    return F.mse_loss(prediction.float(), target.float())


def training_scheduler(pipe):
    """The DDPM noise schedule of the base model (the examples' `noise_scheduler`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def make_accelerator(device: torch.device, dtype: torch.dtype, gradient_accumulation_steps: int):
    """An `Accelerator` on `device` with mixed precision matching the frozen weights' `dtype`."""
    from accelerate import Accelerator

    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        cpu=device.type == "cpu",
    )


def progress(total: int, desc: str, unit: str = "step"):
    """A tqdm bar with rate and ETA for one long loop."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
