"""Read the run folders written by stage `classify` (`<runs>/<seed>-<arch>-<source>/`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from m2m.classify import run_name
from m2m.errors import M2MError


def require_runs(runs: Path, seeds: Sequence[int], archs: Sequence[str], sources: Sequence[str],
                 filename: str) -> dict[tuple[int, str, str], Path]:
    """`<runs>/<run>/<filename>` of every seed x arch x source; one error names every missing file."""
    paths = {(seed, arch, source): Path(runs) / run_name(seed, arch, source) / filename
             for seed in seeds for arch in archs for source in sources}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise M2MError(f"{len(missing)} run file(s) missing (has stage classify run for every seed, arch and "
                       f"source?): {', '.join(missing)}")
    return paths


def read_run_metrics(runs: Path, seeds: Sequence[int], archs: Sequence[str],
                     sources: Sequence[str]) -> dict[tuple[int, str, str], dict[str, float]]:
    """(seed, arch, source) -> that run's flat metrics.json."""
    paths = require_runs(runs, seeds, archs, sources, "metrics.json")
    return {key: json.loads(path.read_text()) for key, path in paths.items()}


def summed_confusion(runs: Path, seeds: Sequence[int], arch: str, source: str) -> pd.DataFrame:
    """Confusion counts of `arch` x `source` summed over seeds; index = true condition, columns = predicted."""
    paths = require_runs(runs, seeds, [arch], [source], "confusion.csv")
    tables = [pd.read_csv(path, index_col="label") for path in paths.values()]
    return sum(tables[1:], tables[0])
