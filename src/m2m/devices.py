"""The torch device a `device` param names (`diffusion.device`, `classifier.device`)."""

from __future__ import annotations

import torch

from m2m.errors import M2MError


def resolve_device(name: str, param: str) -> torch.device:
    """`auto` -> cuda if available, else cpu; anything else as given (the params checked its form).

    A CUDA device on a machine without CUDA is an M2MError naming `param`.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise M2MError(f"{param} is {name!r} but no CUDA device is available; use auto or cpu")
    return device
