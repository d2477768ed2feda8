"""Near-duplicate clusters of Fitzpatrick17k (Abhishek, Jain and Hamarneh, 2024) and leakage across splits.

Each cluster line is a Python list literal of names `<label abbreviation>_f<fst>_<index>_<first 8 hex of md5hash>`;
the 8-hex prefix is unique among Fitzpatrick17k's md5hashes, so it identifies the image.

Stage `leakage` reads one split per repetition seed (data/splits) and reports, per seed, which test images have a
near-duplicate among the training images.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from m2m.errors import M2MError

TRAINING_ROLES = ("train", "val")
PAIR_COLUMNS = ["test_md5hash", "test_label", "test_fst", "train_md5hash", "train_label", "train_fst"]


def parse_cluster_line(line: str, where: str) -> list[str]:
    """The 8-hex md5 prefixes of one cluster line."""
    try:
        names = ast.literal_eval(line)
    except (ValueError, SyntaxError) as err:
        raise M2MError(f"{where}: not a Python list of names ({err})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise M2MError(f"{where}: not a list of names")
    prefixes = [n.rsplit("_", 1)[-1].lower() for n in names]
    bad = [n for n, p in zip(names, prefixes, strict=True) if len(p) != 8 or p.strip("0123456789abcdef")]
    if bad:
        raise M2MError(f"{where}: name(s) {bad} do not end in 8 hex digits of an md5hash")
    return prefixes


def read_clusters(path: Path, md5hashes: Iterable[str]) -> dict[str, int]:
    """Map each md5hash in `md5hashes` that lies in a near-duplicate cluster to its cluster's id.

    Clusters that share an image are merged, so two images with the same id are near-duplicates (transitively).
    """
    by_prefix = {h[:8]: h for h in md5hashes}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    first_cluster_of: dict[str, int] = {}
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        for prefix in parse_cluster_line(line, f"{path}, line {number}"):
            if prefix in first_cluster_of:
                parent[root(number)] = root(first_cluster_of[prefix])
            else:
                first_cluster_of[prefix] = number
    return {by_prefix[p]: root(c) for p, c in first_cluster_of.items() if p in by_prefix}


def near_duplicates_of(md5hashes: Iterable[str], cluster_of: dict[str, int]) -> set[str]:
    """Every image in `cluster_of` that shares a cluster with one of `md5hashes` (excluding those themselves)."""
    query = set(md5hashes)
    clusters = {cluster_of[h] for h in query if h in cluster_of}
    return {h for h, c in cluster_of.items() if c in clusters and h not in query}


def leaked_pairs(split: pd.DataFrame, cluster_of: dict[str, int]) -> pd.DataFrame:
    """Every (test image, training image) pair of one split that share a near-duplicate cluster.

    Training images are those the generator and the classifier see: roles TRAINING_ROLES.

    Args:
        split: one seed's split (columns md5hash, label, fitzpatrick_scale, role), in split order.
        cluster_of: md5hash -> cluster id, from `read_clusters`.

    Returns:
        PAIR_COLUMNS, one row per pair, in split order of the test image, then of the training image.
    """
    training = split[split.role.isin(TRAINING_ROLES)]
    pairs = []
    for test in split[split.role == "test"].itertuples(index=False):
        twins = near_duplicates_of([test.md5hash], cluster_of)
        test_row = (test.md5hash, test.label, test.fitzpatrick_scale)
        pairs += [(*test_row, train.md5hash, train.label, train.fitzpatrick_scale)
                  for train in training[training.md5hash.isin(twins)].itertuples(index=False)]
    return pd.DataFrame(pairs, columns=PAIR_COLUMNS)


def leakage_summary(split: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, int]:
    """{"test_images": N, "leaked": K}: K of the split's N test images have a near-duplicate in training."""
    return {"test_images": int((split.role == "test").sum()), "leaked": int(pairs.test_md5hash.nunique())}


def leakage_markdown(summaries: dict[int, dict[str, int]], pairs: dict[int, pd.DataFrame]) -> str:
    """The leakage report: one summary row per repetition seed, then each seed's leaked pairs."""
    lines = ["# Near-duplicate leakage: test images with a near-duplicate among the training images", "",
             f"Training images: roles {' + '.join(TRAINING_ROLES)} (what the generator and the classifier train on). "
             "Near-duplicate clusters: Abhishek, Jain and Hamarneh (2024), complete_clusters.txt.", "",
             "| seed | test images | leaked | leaked % |", "|---|---|---|---|"]
    for seed, s in summaries.items():
        share = 100 * s["leaked"] / s["test_images"] if s["test_images"] else 0.0
        lines.append(f"| {seed} | {s['test_images']} | {s['leaked']} | {share:.1f} |")
    for seed, seed_pairs in pairs.items():
        lines += ["", f"## seed={seed}: {len(seed_pairs)} pair(s)", ""]
        if len(seed_pairs):
            lines += ["| test md5hash | label | FST | | training md5hash | label | FST |", "|---" * 7 + "|"]
            lines += [f"| {p.test_md5hash} | {p.test_label} | {p.test_fst} | <-> | {p.train_md5hash} | {p.train_label} "
                      f"| {p.train_fst} |" for p in seed_pairs.itertuples(index=False)]
    return "\n".join(lines) + "\n"
