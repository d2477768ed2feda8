"""Paper Table 5 (generation strategy x test group, accuracy of a syn-trained classifier) from DVC experiments.

The ablation is a queue of experiments (`dvc exp run --queue -S generation.strategy=... -S target_group=...`);
`dvc exp show --json` lists each with its params and metrics, and this module turns the ones of setting i into the
table. Its JSON: a list of baseline states {rev, name, data, experiments: [{revs: [state, ...]}]}, where a state's
`data` holds `timestamp`, `params` and `metrics` as {file: {"data": {...}}}.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from m2m.params import STRATEGIES
from m2m.report import ARCH_NAMES
from m2m.report.tables import markdown_table, mean_std, read_published

TARGETS = ("light", "dark")


def iter_states(exps: Sequence[dict]) -> Iterator[dict]:
    """Every baseline and experiment state with data, in `dvc exp show` order."""
    for baseline in exps:
        yield baseline
        for exp_range in baseline.get("experiments") or []:
            yield from exp_range.get("revs", [])


def merged_data(files: dict) -> dict:
    """The union of the `data` mappings of a state's params or metrics files (files that failed are skipped)."""
    merged = {}
    for result in (files or {}).values():
        merged |= result.get("data") or {}
    return merged


def experiments_table(exps: Sequence[dict], arch: str) -> pd.DataFrame:
    """One row per setting-i experiment reporting `<arch>.syn.accuracy.mean`: name, timestamp, strategy, target,
    accuracy (percent), std (percent, NaN with one seed)."""
    rows = []
    for state in iter_states(exps):
        data = state.get("data") or {}
        params, metrics = merged_data(data.get("params")), merged_data(data.get("metrics"))
        mean = metrics.get(f"{arch}.syn.accuracy.mean")
        if params.get("setting") != "i" or mean is None:
            continue
        std = metrics.get(f"{arch}.syn.accuracy.std")
        rows.append({"name": state.get("name") or state.get("rev"), "timestamp": data.get("timestamp") or "",
                     "strategy": params.get("generation", {}).get("strategy"), "target": params.get("target_group"),
                     "accuracy": 100 * mean, "std": float("nan") if std is None else 100 * std})
    return pd.DataFrame(rows, columns=["name", "timestamp", "strategy", "target", "accuracy", "std"])


def table5_markdown(table: pd.DataFrame, published_csv: Path, arch: str) -> str:
    """Our Table 5 (the most recent experiment per cell) above the published one; "–" marks a missing cell."""
    latest = table.sort_values("timestamp").groupby(["target", "strategy"]).last()
    header = ["target", *STRATEGIES]

    def row(target, cell):
        return [target, *(cell(target, strategy) for strategy in STRATEGIES)]

    def ours(target, strategy):
        if (target, strategy) not in latest.index:
            return "–"
        return mean_std(latest.loc[(target, strategy), "accuracy"], latest.loc[(target, strategy), "std"])

    published = read_published(published_csv)
    published = published[published.table == 5].set_index(["target", "strategy"])["mean"]

    def paper(target, strategy):
        return mean_std(published.get((target, strategy)), None)

    return "\n".join([
        f"# Table 5: accuracy (%) of {ARCH_NAMES.get(arch, arch)} trained on synthetic images, setting i\n",
        f"## This pipeline ({len(table)} experiments found; mean ± sample std over seeds)\n",
        markdown_table(header, [row(t, ours) for t in TARGETS]) + "\n",
        "## As published (VGG-16)\n",
        markdown_table(header, [row(t, paper) for t in TARGETS]) + "\n",
    ])
