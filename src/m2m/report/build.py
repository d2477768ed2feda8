"""The report folder: tables.md (paper Table 2/3/4 layout, published table, light-vs-dark gap, skin tone of the
synthetic set) and figures/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from m2m.classify.data import read_manifest
from m2m.data.splits import read_split
from m2m.params import SOURCES, StageParams
from m2m.report.figures import confusion_figure, fst_accuracy_figure, pairs_figure, pick_pairs, title_note
from m2m.report.runs import summed_confusion
from m2m.report.tables import PAPER_TABLE, gap_table, ours_table, published_table, read_published
from m2m.report.tone import tone_rows, tone_table

STAND_IN = ("> **Procedural stand-in.** `images.source` is `mini`: the images are rendered by the project, not "
            "dermatology photographs. These numbers test the pipeline, not the paper's claim.\n")


def tables_markdown(p: StageParams, metrics: Mapping[str, float], published_csv: Path, n_test: int,
                    n_contrast: int, tones: str) -> str:
    """tables.md for the current setting (see the module docstring)."""
    test_group = p.target_group
    contrast_group = "light" if test_group == "dark" else "dark"
    fsts = p.data.dark_fst if test_group == "dark" else p.data.light_fst
    number, archs = PAPER_TABLE[p.setting], p.classifier.archs
    parts = [f"# Results: setting {p.setting}, test on the {test_group} group\n",
             STAND_IN if p.images.source == "mini" else "",
             f"Classifiers trained on real, synthetic (syn) or real and synthetic (real+syn) images, selected by "
             f"`classifier.model_selection={p.classifier.model_selection}` (never on the test set), evaluated once "
             f"on {n_test} test images of the {test_group} group (FST {', '.join(map(str, fsts))}) per seed. "
             f"Mean ± sample std (ddof=1) over {len(p.seeds)} repetition seeds ({', '.join(map(str, p.seeds))}), "
             f"in percent. Precision, recall and F1 are macro averages (weighted ones are in metrics.json).\n",
             f"## Table {number} layout: this pipeline\n", ours_table(metrics, archs, SOURCES) + "\n"]
    if test_group == "dark":
        parts += [f"## Table {number} as published\n",
                  published_table(read_published(published_csv), number, SOURCES) + "\n"]
    else:
        parts += ["## Published\n", "The paper publishes no Table 2 for a light test group; its Table 5 reports "
                  "VGG-16 trained on synthetic images only (see `m2m table5`).\n"]
    parts += [f"## Light vs dark: contrast ({contrast_group}) vs test ({test_group}) accuracy\n",
              f"Contrast rows are the {n_contrast} seed images of the {contrast_group} group, never trained on; "
              f"the gap is contrast minus test accuracy.\n",
              gap_table(metrics, archs, SOURCES, test_group, contrast_group) + "\n",
              f"## Skin tone of the synthetic images (seed {p.seeds[0]})\n",
              "Individual typology angle (ITA) of each source and its synthetic image, from the median L*, b* of "
              "the whole image; type ranges: I > 55°, II 41–55°, III 28–41°, IV 10–28°, V −30–10°, VI < −30°.\n",
              tones + "\n",
              "## Figures\n",
              "- `figures/pairs.png`: real and synthetic image pairs per condition (Fig. 2)\n"
              + "".join(f"- `figures/confusion_{arch}.png`: test confusion matrices of {arch}\n" for arch in archs)
              + "- `figures/accuracy_per_fst.png`: accuracy per Fitzpatrick type, real vs syn vs real+syn\n"]
    return "\n".join(part for part in parts if part)


def build_report(p: StageParams, metrics: Mapping[str, float], runs: Path, splits: Path, images: Path,
                 synthetic: Path, published: Path, out: Path) -> None:
    """Write `out`/tables.md and `out`/figures/*.png (the first seed's split and synthetic set illustrate)."""
    seed = p.seeds[0]
    split = read_split(Path(splits) / f"seed={seed}.csv")
    roles = split.role.value_counts()
    manifest = read_manifest(Path(synthetic) / f"seed={seed}")
    tones = tone_table(tone_rows(manifest, images), [p.data.light_fst, p.data.dark_fst])
    text = tables_markdown(p, metrics, published, int(roles.get("test", 0)), int(roles.get("contrast", 0)), tones)
    (out / "tables.md").write_text(text)
    figures = out / "figures"
    figures.mkdir()
    note = title_note(p.images.source)
    pairs = p.report.pairs_per_condition
    picked = pick_pairs(manifest, p.data.conditions, pairs)
    pairs_figure(picked, images, pairs, note).savefig(figures / "pairs.png", dpi=100)
    for arch in p.classifier.archs:
        confusions = {source: summed_confusion(runs, p.seeds, arch, source) for source in SOURCES}
        confusion_figure(confusions, arch, note).savefig(figures / f"confusion_{arch}.png", dpi=100)
    fsts = (*p.data.light_fst, *p.data.dark_fst)
    fst_accuracy_figure(metrics, p.classifier.archs, SOURCES, fsts, note).savefig(
        figures / "accuracy_per_fst.png", dpi=100)
