"""Stage `splits`: the original seed groups, exact counts per setting, disjointness, determinism."""

from pathlib import Path

import pandas as pd
import pytest

from m2m.data.splits import make_split
from m2m.data.subset import read_annotations, select_subset
from m2m.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
PAPER_SEEDS = (0, 42, 123, 1111, 1234)


@pytest.fixture(scope="module")
def data():
    return read_params_file(ROOT / "params.yaml").data


@pytest.fixture(scope="module")
def subset(data):
    annotations = read_annotations(ROOT / "data/raw/fitzpatrick17k.csv", data.sha256)
    return select_subset(annotations, data.conditions, data.light_fst, data.dark_fst)


def split(subset, data, seed, setting, target_group="dark", val_fraction=0.0):
    return make_split(subset, seed, setting, target_group, data.light_fst, data.dark_fst, 8, val_fraction)


def original_seed_groups(subset, seed):
    """The original implementation's code, verbatim in spirit: one sample per FST group."""
    def draw(group):
        df = subset[subset.fitzpatrick_scale.isin(group)]
        return set(df.groupby("label", group_keys=False).sample(n=8, random_state=seed).md5hash)

    return draw([1, 2]), draw([5, 6])


# setting -> (train, test, contrast) sizes with val_fraction = 0
EXPECTED = {"i": (1519, 56, 56), "ii": (1284, 291, 56), "iii": (1228, 291, 56)}


@pytest.mark.parametrize("setting", ["i", "ii", "iii"])
@pytest.mark.parametrize("seed", PAPER_SEEDS)
def test_counts_and_seed_groups(subset, data, seed, setting):
    s = split(subset, data, seed, setting)
    counts = s.role.value_counts()
    assert (counts["train"], counts["test"], counts["contrast"]) == EXPECTED[setting]
    light_seeds, dark_seeds = original_seed_groups(subset, seed)
    by_role = {role: set(group.md5hash) for role, group in s.groupby("role")}
    if setting == "i":
        assert by_role["test"] == dark_seeds and by_role["contrast"] == light_seeds
    else:
        assert by_role["contrast"] == light_seeds
        assert by_role["test"] == set(subset.md5hash[subset.fitzpatrick_scale.isin([5, 6])]) - dark_seeds
        assert (dark_seeds <= by_role["train"]) == (setting == "ii")
        assert not dark_seeds & by_role["train"] or setting == "ii"
    assert s.md5hash.is_unique  # roles are disjoint
    assert (s[s.role == "contrast"].label.value_counts() == 8).all()


def test_setting_i_light_target_swaps_groups(subset, data):
    s = split(subset, data, 0, "i", target_group="light")
    light_seeds, dark_seeds = original_seed_groups(subset, 0)
    assert set(s.md5hash[s.role == "test"]) == light_seeds
    assert set(s.md5hash[s.role == "contrast"]) == dark_seeds


def test_validation_is_a_stratified_part_of_training(subset, data):
    without = split(subset, data, 42, "iii")
    s = split(subset, data, 42, "iii", val_fraction=0.1)
    assert set(s.md5hash[s.role.isin(["train", "val"])]) == set(without.md5hash[without.role == "train"])
    val_share = s[s.role != "test"].groupby("label").role.apply(lambda r: (r == "val").mean())
    assert val_share.between(0.05, 0.2).all()
    assert list(s.columns) == ["md5hash", "label", "fitzpatrick_scale", "role"]


def test_deterministic_and_seed_dependent(subset, data):
    a, b = split(subset, data, 123, "ii", val_fraction=0.1), split(subset, data, 123, "ii", val_fraction=0.1)
    pd.testing.assert_frame_equal(a, b)
    assert not split(subset, data, 1234, "ii").equals(split(subset, data, 123, "ii"))


def test_dropping_near_duplicates_only_touches_training(subset, data):
    s = split(subset, data, 0, "iii")
    victims = frozenset(s.md5hash[s.role == "train"][:5])
    dropped = make_split(subset, 0, "iii", "dark", data.light_fst, data.dark_fst, 8, 0.0, victims)
    assert set(s.md5hash) - set(dropped.md5hash) == victims
