"""Report figures (matplotlib's object API on the Agg canvas, no pyplot state).

Every title carries `note` (see `title_note`), which says "procedural stand-in" when the images are the project's
mini world, so a figure can never be mistaken for dermatology results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from m2m.data.imagefolder import find_image, load_rgb
from m2m.report import ARCH_NAMES


def title_note(images_source: str) -> str:
    """The second line of every figure title: names the procedural stand-in when `images.source` is mini."""
    return "procedural stand-in images, not dermatology data" if images_source == "mini" else ""


def set_title(fig: Figure, title: str, note: str) -> None:
    """The figure's title, with `note` on a second line when there is one."""
    fig.suptitle(f"{title}\n({note})" if note else title, fontsize=10)


def pick_pairs(manifest: pd.DataFrame, conditions: Sequence[str], pairs: int) -> pd.DataFrame:
    """The first `pairs` synthetic images per condition (manifest order), conditions in label-map order."""
    picked = [manifest[manifest.label == condition].head(pairs) for condition in conditions]
    return pd.concat(picked, ignore_index=True)


def pairs_figure(picked: pd.DataFrame, images: Path, pairs: int, note: str) -> Figure:
    """Fig. 2-style grid: one row per condition, `pairs` (real, synthetic) pairs side by side.

    picked: manifest rows with absolute `path`, source_md5hash, label, source_fitzpatrick_scale, fitzpatrick_scale.
    """
    conditions = list(dict.fromkeys(picked.label))
    fig = Figure(figsize=(2.2 * 2 * pairs, 2.2 * len(conditions) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(conditions), 2 * pairs, squeeze=False))
    for ax in axes.flat:
        ax.axis("off")
    for r, condition in enumerate(conditions):
        rows = picked[picked.label == condition]
        for c, row in enumerate(rows.itertuples()):
            real, syn = axes[r, 2 * c], axes[r, 2 * c + 1]
            real.imshow(load_rgb(find_image(images, row.source_md5hash)))
            real.set_title(f"{condition}\nreal, FST {row.source_fitzpatrick_scale}", fontsize=8)
            syn.imshow(load_rgb(row.path))
            syn.set_title(f"synthetic, target FST {row.fitzpatrick_scale}", fontsize=8)
    set_title(fig, "Real and synthetic image pairs per condition", note)
    return fig


def confusion_figure(confusions: Mapping[str, pd.DataFrame], arch: str, note: str) -> Figure:
    """One confusion matrix per training source (counts summed over seeds; rows true, columns predicted)."""
    fig = Figure(figsize=(5 * len(confusions), 5), layout="constrained")
    axes = fig.subplots(1, len(confusions), squeeze=False)[0]
    for ax, (source, table) in zip(axes, confusions.items(), strict=True):
        ax.imshow(table.to_numpy(), cmap="Blues")
        for (i, j), count in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
        ticks = range(len(table))
        ax.set_xticks(ticks, table.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(ticks, table.index, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=f"train: {source}")
    set_title(fig, f"{ARCH_NAMES[arch]} confusion on the test set, summed over seeds", note)
    return fig


def fst_accuracy_figure(metrics: Mapping[str, float], archs: Sequence[str], sources: Sequence[str],
                        fsts: Sequence[int], note: str) -> Figure:
    """Accuracy per Fitzpatrick type (mean ± sample std over seeds) for each training source, one panel per arch."""
    fig = Figure(figsize=(max(6, 5 * len(archs)), 4.5), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    width = 0.8 / len(sources)
    for ax, arch in zip(axes, archs, strict=True):
        for k, source in enumerate(sources):
            means = [100 * metrics.get(f"{arch}.{source}.accuracy_fst{fst}.mean", np.nan) for fst in fsts]
            stds = [100 * metrics.get(f"{arch}.{source}.accuracy_fst{fst}.std", 0.0) for fst in fsts]
            ax.bar(np.arange(len(fsts)) + (k - (len(sources) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=2, label=source)
        ax.set_xticks(range(len(fsts)), [f"FST {fst}" for fst in fsts])
        ax.set(ylim=(0, 100), ylabel="accuracy (%)", title=ARCH_NAMES[arch])
        ax.legend(fontsize=8)
    set_title(fig, "Accuracy per Fitzpatrick type: real vs syn vs real+syn", note)
    return fig
