"""Near-duplicate clusters of Fitzpatrick17k (Abhishek, Jain and Hamarneh, 2024) and leakage across splits.

Each cluster line is a Python list literal of names `<label abbreviation>_f<fst>_<index>_<first 8 hex of md5hash>`;
the 8-hex prefix is unique among Fitzpatrick17k's md5hashes, so it identifies the image.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from m2m.errors import M2MError


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
