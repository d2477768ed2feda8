"""Skin tone of the synthetic set: does img2img move majority-group sources into the minority's ITA range?

The ITA of an image is taken from the median L*, b* of all its pixels (lesions are small next to the skin), on a
copy reduced to at most `MEASURE_SIDE` pixels: the median colour barely changes, and 512 px images stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from m2m.data.imagefolder import find_image, load_rgb
from m2m.data.ita import ITA_RANGES, ita_of_image
from m2m.report.tables import markdown_table

MEASURE_SIDE = 64


def image_ita(path: Path | str) -> float:
    """ITA in degrees of the image at `path`."""
    image = load_rgb(path)
    image.thumbnail((MEASURE_SIDE, MEASURE_SIDE))
    return ita_of_image(image)


def tone_rows(manifest: pd.DataFrame, images: Path) -> pd.DataFrame:
    """The manifest's source and target Fitzpatrick types with the ITA of the source and the synthetic image.

    manifest: rows of a synthetic set's manifest.csv with absolute `path` (classify.data.read_manifest).
    """
    return pd.DataFrame({
        "source_fst": manifest.source_fitzpatrick_scale.to_numpy(),
        "target_fst": manifest.fitzpatrick_scale.to_numpy(),
        "source_ita": [image_ita(find_image(images, md5)) for md5 in manifest.source_md5hash],
        "synthetic_ita": [image_ita(path) for path in manifest.path],
    })


def ita_span(fsts: Sequence[int]) -> tuple[float, float]:
    """(lowest, highest) ITA of a group of adjacent Fitzpatrick types."""
    return min(ITA_RANGES[f][0] for f in fsts), max(ITA_RANGES[f][1] for f in fsts)


def tone_table(tones: pd.DataFrame, groups: Sequence[Sequence[int]]) -> str:
    """Per (source, target) Fitzpatrick type: images, mean source and synthetic ITA, and the share of synthetic
    images whose ITA lies in the target type's range and in its group's range (`groups`: e.g. [(1, 2), (5, 6)])."""
    group_of = {fst: tuple(group) for group in groups for fst in group}
    rows = []
    for (source, target), cell in tones.groupby(["source_fst", "target_fst"]):
        low, high = ITA_RANGES[target]
        group_low, group_high = ita_span(group_of.get(target, (target,)))
        ita = cell.synthetic_ita
        rows.append([str(source), str(target), str(len(cell)), f"{cell.source_ita.mean():.1f}", f"{ita.mean():.1f}",
                     f"{ita.between(low, high).mean():.0%}", f"{ita.between(group_low, group_high).mean():.0%}"])
    header = ["Source FST", "Target FST", "Images", "Source ITA (mean °)", "Synthetic ITA (mean °)",
              "In target type's ITA range", "In target group's ITA range"]
    return markdown_table(header, rows)
