"""The typer application and the registry of which params each stage command reads."""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import typer

from m2m.errors import M2MError

app = typer.Typer(
    help="Majority-to-minority augmentation: one command per DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

#: command name -> the params.yaml sections (or top-level keys) it reads; tests compare this with dvc.yaml.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {}


def record_timing(name: str, seconds: float) -> None:
    """Append a stage's wall time to $M2M_TIMINGS (set by `make repro`) for the per-stage summary."""
    log = os.environ.get("M2M_TIMINGS")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"stage": name, "seconds": round(seconds, 2)}) + "\n")


def stage(name: str, params: tuple[str, ...] = ()):
    """Register a typer command for DVC stage `name` that reads `params`; time it and report errors cleanly."""

    def decorator(func):
        STAGE_PARAMS[name] = tuple(params)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except (M2MError, FileNotFoundError) as err:
                typer.echo(f"m2m {name}: error: {err}", err=True)
                sys.exit(2)
            seconds = time.perf_counter() - start
            typer.echo(f"[m2m {name}] done in {seconds:.1f} s", err=True)
            record_timing(name, seconds)
            return result

        return app.command(name)(wrapper)

    return decorator
