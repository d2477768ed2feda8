"""Markdown tables in the paper's layout: ours, the published one, and the light-vs-dark accuracy gap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from m2m.errors import M2MError
from m2m.report import ARCH_NAMES

#: the paper's table of each setting (its test set is always the dark group).
PAPER_TABLE = {"i": 2, "ii": 3, "iii": 4}
#: table column -> (our metric key, the published CSV's metric)
COLUMNS = {"Accuracy": ("accuracy", "accuracy"), "Precision": ("precision_macro", "precision"),
           "Recall": ("recall_macro", "recall"), "F1 Score": ("f1_macro", "f1")}


def read_published(path: Path) -> pd.DataFrame:
    """The paper's published tables (see data/published/README.md)."""
    try:
        return pd.read_csv(path, comment="#", dtype={"setting": str, "strategy": str})
    except FileNotFoundError:
        raise M2MError(f"published tables {path} not found") from None


def mean_std(mean: float | None, std: float | None) -> str:
    """"70.24 ± 0.12"; "70.24" without a std; "–" without a mean. Inputs already in percent."""
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if std is None or pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def arch_rows(archs: Sequence[str], sources: Sequence[str], cells) -> list[list[str]]:
    """Architecture x Train rows, the architecture named on its first row only; cells(arch, source) -> [str]."""
    return [[ARCH_NAMES[arch] if i == 0 else "", source, *cells(arch, source)]
            for arch in archs for i, source in enumerate(sources)]


def percent(metrics: Mapping[str, float], key: str) -> tuple[float | None, float | None]:
    """(mean, std) of aggregated metric `key` (e.g. `resnet18.real.accuracy`) in percent; None where absent."""
    return tuple(None if (value := metrics.get(f"{key}.{stat}")) is None else 100 * value for stat in ("mean", "std"))


def ours_table(metrics: Mapping[str, float], archs: Sequence[str], sources: Sequence[str]) -> str:
    """Our aggregated metrics in the paper's layout, "mean ± std" in percent."""

    def cells(arch, source):
        return [mean_std(*percent(metrics, f"{arch}.{source}.{key}")) for key, _ in COLUMNS.values()]

    return markdown_table(["Architecture", "Train", *COLUMNS], arch_rows(archs, sources, cells))


def published_table(published: pd.DataFrame, table: int, sources: Sequence[str]) -> str:
    """The paper's Table `table` (2, 3 or 4) in its own layout."""
    rows = published[published.table == table].set_index(["arch", "source", "metric"])
    archs = list(dict.fromkeys(rows.index.get_level_values("arch")))

    def cells(arch, source):
        return [mean_std(rows.loc[(arch, source, metric), "mean"], rows.loc[(arch, source, metric), "std"])
                for _, metric in COLUMNS.values()]

    return markdown_table(["Architecture", "Train", *COLUMNS], arch_rows(archs, sources, cells))


def gap_table(metrics: Mapping[str, float], archs: Sequence[str], sources: Sequence[str], test_group: str,
              contrast_group: str) -> str:
    """Contrast-group vs test-group accuracy and their gap (contrast - test), in percent."""

    def cells(arch, source):
        keys = ("contrast_accuracy", "accuracy", "contrast_gap")
        return [mean_std(*percent(metrics, f"{arch}.{source}.{key}")) for key in keys]

    header = ["Architecture", "Train", f"Contrast ({contrast_group}) accuracy", f"Test ({test_group}) accuracy",
              f"Gap ({contrast_group} − {test_group})"]
    return markdown_table(header, arch_rows(archs, sources, cells))
