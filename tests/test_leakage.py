"""Stage `leakage`: near-duplicates of test images among the training images, on the real subset and seed groups.

The library joins through `read_clusters` (merged clusters, md5hash -> id); the check here parses the cluster file
with a regex and joins on the 8-hex prefix with pandas merges.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from m2m.cli import app
from m2m.data.leakage import leakage_markdown, leakage_summary, leaked_pairs, read_clusters
from m2m.data.splits import make_split
from m2m.data.subset import read_annotations, select_subset
from m2m.params import read_params_file

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "data/raw/abhishek2024/complete_clusters.txt"
PAPER_SEEDS = (0, 42, 123, 1111, 1234)
#: Leaked test images per (setting, target group) and seed, for the quoted numbers (test images: 56 in setting i,
#: 291 in settings ii and iii).
LEAKED = {
    ("i", "dark"): {0: 23, 42: 16, 123: 19, 1111: 15, 1234: 13},
    ("i", "light"): {0: 11, 42: 9, 123: 9, 1111: 13, 1234: 7},
    ("ii", "dark"): {0: 29, 42: 24, 123: 21, 1111: 23, 1234: 19},
    ("iii", "dark"): {0: 5, 42: 6, 123: 4, 1111: 6, 1234: 6},
}


@pytest.fixture(scope="module")
def params():
    return read_params_file(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def subset(params):
    data = params.data
    return select_subset(read_annotations(ROOT / "data/raw/fitzpatrick17k.csv", data.sha256), data.conditions,
                         data.light_fst, data.dark_fst)


@pytest.fixture(scope="module")
def cluster_names() -> pd.DataFrame:
    """(line, prefix) per name in the cluster file, parsed with a regex."""
    text = CLUSTERS.read_text()
    names = [(number, m.group(1)) for number, line in enumerate(text.splitlines())
             for m in re.finditer(r"'[^']*_([0-9a-f]{8})'", line)]
    assert len(names) == text.count("'") // 2  # every name parsed
    return pd.DataFrame(names, columns=["line", "prefix"])


def independent_pairs(split: pd.DataFrame, names: pd.DataFrame) -> set[tuple[str, str]]:
    named = split.assign(prefix=split.md5hash.str[:8]).merge(names, on="prefix")
    test = named[named.role == "test"]
    training = named[named.role.isin(["train", "val"])]
    joined = test.merge(training, on="line", suffixes=("_test", "_train"))
    return set(zip(joined.md5hash_test, joined.md5hash_train, strict=True))


def the_split(subset, params, seed, setting, target_group, drop=frozenset()):
    data = params.data
    return make_split(subset, seed, setting, target_group, data.light_fst, data.dark_fst, params.splits.n_seed_images,
                      params.splits.val_fraction, drop)


@pytest.mark.parametrize("setting, target_group", sorted(LEAKED))
def test_leakage_on_the_real_subset_matches_an_independent_count(subset, params, cluster_names, setting,
                                                                 target_group):
    cluster_of = read_clusters(CLUSTERS, subset.md5hash)
    for seed in PAPER_SEEDS:
        split = the_split(subset, params, seed, setting, target_group)
        pairs = leaked_pairs(split, cluster_of)
        expected = independent_pairs(split, cluster_names)
        assert set(zip(pairs.test_md5hash, pairs.train_md5hash, strict=True)) == expected
        summary = leakage_summary(split, pairs)
        assert summary == {"test_images": 56 if setting == "i" else 291, "leaked": len({t for t, _ in expected})}
        assert summary["leaked"] == LEAKED[setting, target_group][seed], (setting, target_group, seed)


def test_the_issue_example_is_a_cross_group_near_duplicate(subset):
    cluster_of = read_clusters(CLUSTERS, subset.md5hash)
    (scc_light,) = subset.md5hash[subset.md5hash.str.startswith("550749c3")]
    (scc_dark,) = subset.md5hash[subset.md5hash.str.startswith("5b552fb1")]
    assert cluster_of[scc_light] == cluster_of[scc_dark]


def test_pairs_and_report_on_a_small_split(tmp_path):
    a, b, c, d, e = (f"{i:08x}" + "0" * 24 for i in range(1, 6))
    (tmp_path / "clusters.txt").write_text(f"['ps_f5_1_{a[:8]}', 'ps_f2_9_{b[:8]}', 'ps_f1_3_{c[:8]}']\n"
                                           f"['fo_f6_2_{d[:8]}', 'fo_f6_4_{e[:8]}']\n")
    split = pd.DataFrame({"md5hash": [a, b, c, d, e], "label": ["psoriasis"] * 3 + ["folliculitis"] * 2,
                          "fitzpatrick_scale": [5, 2, 1, 6, 6], "role": ["test", "train", "val", "test", "contrast"]})
    pairs = leaked_pairs(split, read_clusters(tmp_path / "clusters.txt", split.md5hash))
    assert list(zip(pairs.test_md5hash, pairs.train_md5hash, strict=True)) == [(a, b), (a, c)]
    summary = leakage_summary(split, pairs)
    assert summary == {"test_images": 2, "leaked": 1}
    report = leakage_markdown({7: summary}, {7: pairs})
    assert "| 7 | 2 | 1 | 50.0 |" in report
    assert f"| {a} | psoriasis | 5 | <-> | {b} | psoriasis | 2 |" in report


def run_splits_and_leakage(tmp_path: Path, subset: pd.DataFrame, setting: str, exclude: bool) -> tuple[Path, dict]:
    """`m2m splits` then `m2m leakage` with the repo's params, seeds 0 and 42, and `exclude_near_duplicates`."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(setting=setting, target_group="dark", seeds=[0, 42])
    raw["splits"]["exclude_near_duplicates"] = exclude
    work = tmp_path / f"{setting}-{exclude}"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    if not (tmp_path / "subset.csv").exists():
        subset.to_csv(tmp_path / "subset.csv", index=False)
    result = CliRunner().invoke(app, ["splits", "--subset", str(tmp_path / "subset.csv"), "--clusters", str(CLUSTERS),
                                      "--out", str(work / "splits"), "--params", str(work / "params.yaml")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["leakage", "--splits", str(work / "splits"), "--clusters", str(CLUSTERS),
                                      "--out", str(work / "leakage.json"), "--report", str(work / "leakage.md"),
                                      "--params", str(work / "params.yaml")])
    assert result.exit_code == 0, result.output
    return work / "splits", json.loads((work / "leakage.json").read_text())


@pytest.mark.parametrize("setting", ["i", "ii"])
def test_exclude_near_duplicates_removes_exactly_the_leaked_training_rows(tmp_path, subset, setting):
    plain_splits, plain_metrics = run_splits_and_leakage(tmp_path, subset, setting, exclude=False)
    clean_splits, clean_metrics = run_splits_and_leakage(tmp_path, subset, setting, exclude=True)
    n_test = 56 if setting == "i" else 291
    leaked = LEAKED[setting, "dark"]
    assert plain_metrics == {f"seed={s}": {"test_images": n_test, "leaked": leaked[s]} for s in (0, 42)}
    assert clean_metrics == {f"seed={s}": {"test_images": n_test, "leaked": 0} for s in (0, 42)}

    cluster_of = read_clusters(CLUSTERS, subset.md5hash)
    for seed in (0, 42):
        plain = pd.read_csv(plain_splits / f"seed={seed}.csv", dtype={"md5hash": str})
        clean = pd.read_csv(clean_splits / f"seed={seed}.csv", dtype={"md5hash": str})
        leaked_training = set(leaked_pairs(plain, cluster_of).train_md5hash)
        assert leaked_training
        training = {name: set(s.md5hash[s.role.isin(["train", "val"])]) for name, s in (("plain", plain),
                                                                                          ("clean", clean))}
        assert training["clean"] == training["plain"] - leaked_training
        for role in ("test", "contrast"):
            assert list(clean.md5hash[clean.role == role]) == list(plain.md5hash[plain.role == role])
