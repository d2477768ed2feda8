"""`m2m` command line: one thin command per DVC stage. Heavy libraries are imported inside commands."""

from m2m.cli import classify, data, diffusion, images, pretrain  # noqa: F401  (registers commands)
from m2m.cli._app import STAGE_PARAMS, app

__all__ = ["app", "STAGE_PARAMS"]
