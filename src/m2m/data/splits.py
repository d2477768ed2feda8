"""Stage `splits`: seed groups and train/val/test roles per repetition seed (paper Section 3).

Seed images are drawn exactly as the original implementation drew them (pandas `groupby(...).sample`), so the
seed groups are bit-identical to the authors'. Output per seed: data/splits/seed=<n>.csv with columns
md5hash, label, fitzpatrick_scale, role. Roles:
- train: generator and classifier training; val: a stratified hold-out of the training rows, used only for
  classifier model selection (the generator trains on train + val, as the paper uses one training set);
- test: the evaluation set of the setting;
- contrast: the other group's seed images, never trained on, evaluated only to measure the light-vs-dark gap.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from m2m.errors import M2MError

SPLIT_COLUMNS = ["md5hash", "label", "fitzpatrick_scale", "role"]
ROLES = ("train", "val", "test", "contrast")


def read_split(path: Path | str) -> pd.DataFrame:
    """A split CSV written by this stage (columns SPLIT_COLUMNS); a missing file or column is an M2MError."""
    try:
        split = pd.read_csv(path, dtype={"md5hash": str})
    except FileNotFoundError:
        raise M2MError(f"split file {path} not found") from None
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise M2MError(f"{path}: missing column(s) {', '.join(missing)}")
    return split


def draw_seed_images(subset: pd.DataFrame, fst_group: tuple[int, ...], n: int, seed: int) -> pd.DataFrame:
    """`n` images per condition from `fst_group`, drawn as the original implementation did (keep bit-identical)."""
    group = subset[subset.fitzpatrick_scale.isin(fst_group)]
    too_small = group.label.value_counts().loc[lambda counts: counts < n]
    if len(too_small):
        raise M2MError(f"splits.n_seed_images={n}: too few images of FST {fst_group} for {dict(too_small)}")
    return group.groupby("label", group_keys=False).sample(n=n, random_state=seed)


def assign_roles(
    subset: pd.DataFrame,
    light_seeds: pd.Index,
    dark_seeds: pd.Index,
    light_fst: tuple[int, ...],
    setting: str,
    target_group: str,
) -> pd.Series:
    """Role of every subset row under `setting` ("" = not used); see the module docstring."""
    is_light = subset.fitzpatrick_scale.isin(light_fst)
    is_seed_light = subset.index.isin(light_seeds)
    is_seed_dark = subset.index.isin(dark_seeds)
    is_seed = is_seed_light | is_seed_dark
    role = pd.Series("", index=subset.index)
    if setting == "i":
        target, other = (is_seed_dark, is_seed_light) if target_group == "dark" else (is_seed_light, is_seed_dark)
        role[~is_seed] = "train"
        role[target] = "test"
        role[other] = "contrast"
    elif setting in ("ii", "iii"):
        role[is_light & ~is_seed] = "train"
        role[~is_light & ~is_seed] = "test"
        role[is_seed_light] = "contrast"
        if setting == "ii":
            role[is_seed_dark] = "train"
    else:
        raise M2MError(f"setting must be i, ii or iii, got {setting!r}")
    return role


def hold_out_validation(split: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Move a label-stratified `val_fraction` of the training rows to role 'val'."""
    if val_fraction == 0:
        return split
    train = split[split.role == "train"]
    _, val_index = train_test_split(train.index, test_size=val_fraction, stratify=train.label, random_state=seed)
    split = split.copy()
    split.loc[val_index, "role"] = "val"
    return split


def make_split(
    subset: pd.DataFrame,
    seed: int,
    setting: str,
    target_group: str,
    light_fst: tuple[int, ...],
    dark_fst: tuple[int, ...],
    n_seed_images: int,
    val_fraction: float,
    drop_from_training: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """The split of one repetition seed: subset rows with a role, in subset order.

    Args:
        subset: the study subset in CSV order (its order decides which rows pandas samples).
        drop_from_training: md5hashes removed from train/val (near-duplicates of test rows), after seeding.
    """
    subset = subset.reset_index(drop=True)
    light_seeds = draw_seed_images(subset, light_fst, n_seed_images, seed).index
    dark_seeds = draw_seed_images(subset, dark_fst, n_seed_images, seed).index
    split = subset.assign(role=assign_roles(subset, light_seeds, dark_seeds, light_fst, setting, target_group))
    split = split[split.role != ""]
    split = split[~((split.role == "train") & split.md5hash.isin(drop_from_training))]
    return hold_out_validation(split, val_fraction, seed)[SPLIT_COLUMNS].reset_index(drop=True)
