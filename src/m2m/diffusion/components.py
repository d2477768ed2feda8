"""Stable-Diffusion components built offline: the real CLIP BPE tokenizer and SD-architecture models from configs.

Stable Diffusion 2.1's tokenizer is the CLIP BPE with 49,408 tokens. `open_clip_torch` ships its merges file, from
which `vocab.json` and `merges.txt` are rebuilt exactly, so prompts tokenize as they do for SD 2.1 without the hub.
The model configs here are the ones the project trains or tests with: `tiny` (tests: seconds on CPU), `mini` (the
embedded base model, see `m2m.diffusion.pretrain`), and `sd21` (SD 2.1 base's architecture with random weights, for
throughput checks on a GPU).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

N_MERGES = 48_894  # 49,408 tokens = 2 x 256 byte symbols + 48,894 merges + 2 special tokens
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def open_clip_bpe_path() -> Path:
    """The BPE merges file shipped inside open_clip_torch (found without importing the package)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary file")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer_files(out_dir: Path) -> tuple[Path, Path]:
    """Write CLIP's `vocab.json` and `merges.txt` (SD 2.1's tokenizer) into `out_dir`."""
    lines = gzip.open(open_clip_bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [START_TOKEN, END_TOKEN]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_clip_tokenizer(work_dir: Path):
    """A `CLIPTokenizer` identical to SD 2.1's (pad token "!", 77 tokens), built from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_tokenizer_files(work_dir)
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77, pad_token="!")


@dataclass(frozen=True)
class ModelSize:
    """Channel widths and depths of one SD-architecture configuration."""

    vae_channels: tuple[int, ...]
    latent_channels: int
    unet_channels: tuple[int, ...]
    layers_per_block: int
    attention_head_dim: int | tuple[int, ...]
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    sample_size: int  # latent side length the UNet is configured for


SIZES = {
    # Seconds on a CPU: for tests.
    "tiny": ModelSize((8, 16), 4, (16, 32), 1, 4, 32, 2, 2, 64, 8),
    # The embedded base model: 64 px images -> 16 x 16 latents.
    "mini": ModelSize((16, 32, 32), 4, (32, 64, 64), 1, 8, 64, 2, 2, 128, 16),
    # Stable Diffusion 2.1 base's architecture (865M-parameter UNet), random weights.
    "sd21": ModelSize((128, 256, 512, 512), 4, (320, 640, 1280, 1280), 2, (5, 10, 20, 20), 1024, 23, 16, 4096, 64),
}


def build_vae(size: ModelSize):
    from diffusers import AutoencoderKL

    n = len(size.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=size.vae_channels,
        latent_channels=size.latent_channels,
        layers_per_block=2 if size is SIZES["sd21"] else 1,
        norm_num_groups=min(32, size.vae_channels[0]),
        sample_size=size.sample_size * 2 ** (n - 1),
    )


def build_unet(size: ModelSize):
    from diffusers import UNet2DConditionModel

    n = len(size.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=size.sample_size,
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=size.unet_channels,
        layers_per_block=size.layers_per_block,
        cross_attention_dim=size.text_hidden,
        attention_head_dim=size.attention_head_dim,
        norm_num_groups=min(32, size.unet_channels[0]),
        use_linear_projection=True,
    )


def build_text_encoder(size: ModelSize, vocab_size: int = 49_408):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=size.text_hidden,
        intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=size.text_hidden,
        pad_token_id=0,
        bos_token_id=49_406,
        eos_token_id=49_407,
    )
    return CLIPTextModel(config)


def sd_scheduler_config() -> dict:
    """The noise schedule of SD 2.1 base (scaled-linear betas, 1,000 steps, epsilon prediction)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
    }


def build_pipeline(size_name: str, work_dir: Path, seed: int = 0):
    """A `StableDiffusionPipeline` of size `size_name` with random weights (seeded) and the real CLIP tokenizer.

    The VAE's `scaling_factor` stays 1.0 until `m2m.diffusion.pretrain` measures it on real latents.
    """
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    size = SIZES[size_name]
    torch.manual_seed(seed)
    vae, unet, text_encoder = build_vae(size), build_unet(size), build_text_encoder(size)
    vae.register_to_config(scaling_factor=1.0)
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        unet=unet.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=build_clip_tokenizer(work_dir),
        scheduler=PNDMScheduler(**sd_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
