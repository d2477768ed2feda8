"""Stage `subset`: the study's rows of Fitzpatrick17k (paper Table 1).

Input: the vendored annotation CSV (data/raw/fitzpatrick17k.csv). Output: data/subset.csv (same columns, same row
order, only the chosen conditions and Fitzpatrick types) and reports/table1.md (counts per condition x type).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from m2m.errors import M2MError

REQUIRED_COLUMNS = ("md5hash", "fitzpatrick_scale", "label")


class DataError(M2MError):
    """An input data file is not what the pipeline needs; the message names the file, row or column."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_annotations(path: Path, expected_sha256: str) -> pd.DataFrame:
    """Read the Fitzpatrick17k CSV after checking it is the expected file.

    Raises:
        DataError: the file's SHA-256 differs (the message says how to accept it), or a required column or cell
            is missing.
    """
    path = Path(path)
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path}: SHA-256 is {actual}, expected {expected_sha256} (the vendored Fitzpatrick17k annotations). "
            f"If you changed the file on purpose, accept it with `-S data.sha256={actual}` "
            f"(or set data.sha256 in conf/config.yaml)."
        )
    df = pd.read_csv(path, dtype={"md5hash": str, "label": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}")
    for column in REQUIRED_COLUMNS:
        empty = df.index[df[column].isna()]
        if len(empty):
            raise DataError(f"{path}: empty {column!r} in data row(s) {', '.join(str(i + 1) for i in empty[:10])}")
    duplicated = df.md5hash[df.md5hash.duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: duplicated md5hash {', '.join(duplicated[:5])}")
    return df


def select_subset(
    df: pd.DataFrame, conditions: tuple[str, ...], light_fst: tuple[int, ...], dark_fst: tuple[int, ...]
) -> pd.DataFrame:
    """Rows whose label is one of `conditions` and whose Fitzpatrick type is light or dark, in CSV order."""
    unknown = sorted(set(conditions) - set(df.label))
    if unknown:
        raise DataError(f"data.conditions: unknown condition(s) {unknown}; the CSV's labels include e.g. "
                        f"{sorted(df.label.unique())[:5]}")
    keep = df.label.isin(conditions) & df.fitzpatrick_scale.isin([*light_fst, *dark_fst])
    return df[keep].reset_index(drop=True)


def count_table(subset: pd.DataFrame, conditions: tuple[str, ...], fst_order: tuple[int, ...]) -> pd.DataFrame:
    """Counts per Fitzpatrick type (rows) x condition (columns), with totals: the layout of paper Table 1."""
    table = pd.crosstab(subset.fitzpatrick_scale, subset.label).reindex(index=list(fst_order),
                                                                        columns=list(conditions), fill_value=0)
    table["Total"] = table.sum(axis=1)
    table.loc["Total"] = table.sum(axis=0)
    return table


def table_markdown(table: pd.DataFrame, title: str) -> str:
    roman = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
    header = "| FST | " + " | ".join(str(c).title() for c in table.columns) + " |"
    rule = "|" + "---|" * (len(table.columns) + 1)
    rows = [f"| {roman.get(i, i)} | " + " | ".join(str(v) for v in row) + " |" for i, row in table.iterrows()]
    return "\n".join([f"# {title}", "", header, rule, *rows, ""])
