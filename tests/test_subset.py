"""Stage `subset`: the paper's Table 1, exactly, and clear errors for bad annotation files."""

from pathlib import Path

import pandas as pd
import pytest

from m2m.data.subset import DataError, count_table, read_annotations, select_subset, sha256_of
from m2m.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "data/raw/fitzpatrick17k.csv"

# Paper Table 1: FST -> counts per condition (in data.conditions order) and row total.
PAPER_TABLE_1 = {
    1: [85, 30, 15, 70, 7, 113, 100, 420],
    2: [156, 97, 56, 115, 28, 232, 180, 864],
    5: [24, 31, 32, 31, 29, 64, 40, 251],
    6: [7, 9, 12, 15, 9, 21, 23, 96],
    "Total": [272, 167, 115, 231, 73, 430, 343, 1631],
}


@pytest.fixture(scope="module")
def data_params():
    return read_params_file(ROOT / "params.yaml").data


@pytest.fixture(scope="module")
def subset(data_params):
    return select_subset(read_annotations(CSV, data_params.sha256), data_params.conditions,
                         data_params.light_fst, data_params.dark_fst)


def test_table1_matches_paper_in_every_cell(subset, data_params):
    table = count_table(subset, data_params.conditions, (*data_params.light_fst, *data_params.dark_fst))
    assert {k: list(table.loc[k]) for k in table.index} == PAPER_TABLE_1


def test_subset_keeps_columns_and_csv_order(subset):
    original = pd.read_csv(CSV)
    assert list(subset.columns) == list(original.columns)
    positions = original.reset_index().set_index("md5hash").loc[subset.md5hash, "index"]
    assert positions.is_monotonic_increasing
    assert len(subset) == 1631 and subset.fitzpatrick_scale.isin([1, 2]).sum() == 1284


def test_changed_file_fails_with_how_to_accept(tmp_path, data_params):
    changed = tmp_path / "f17k.csv"
    changed.write_bytes(CSV.read_bytes() + b"\n")
    with pytest.raises(DataError, match=r"data\.sha256=" + sha256_of(changed)):
        read_annotations(changed, data_params.sha256)


def _write(tmp_path, text):
    path = tmp_path / "a.csv"
    path.write_text(text)
    return path, sha256_of(path)


def test_missing_column_is_named(tmp_path):
    path, digest = _write(tmp_path, "md5hash,label\nab,psoriasis\n")
    with pytest.raises(DataError, match="fitzpatrick_scale"):
        read_annotations(path, digest)


def test_empty_cell_names_row_and_column(tmp_path):
    path, digest = _write(tmp_path, "md5hash,fitzpatrick_scale,label\nab,1,psoriasis\ncd,,psoriasis\n")
    with pytest.raises(DataError, match=r"'fitzpatrick_scale' in data row\(s\) 2"):
        read_annotations(path, digest)


def test_unknown_condition_is_named(subset):
    with pytest.raises(DataError, match="psoriasiss"):
        select_subset(subset, ("psoriasiss",), (1, 2), (5, 6))
