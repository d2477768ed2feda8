"""`m2m aggregate`, `m2m report` and `m2m table5` on fake run folders (no training)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from m2m.cli import app
from m2m.params import SOURCES
from m2m.report.figures import fst_accuracy_figure, title_note
from m2m.report.tone import tone_rows, tone_table

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "data" / "published" / "paper_tables.csv"
CONDITIONS = ["psoriasis", "folliculitis"]
SEEDS = [0, 42]


def write_params(root: Path, **top) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["conditions"] = CONDITIONS
    raw["classifier"]["archs"] = ["resnet18"]
    raw |= {"seeds": SEEDS, "setting": "i", "target_group": "dark"} | top
    raw["images"]["source"] = "mini"
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_runs(root: Path, skip: str | None = None) -> Path:
    """metrics.json and confusion.csv for every seed x resnet18 x source; accuracy = 0.5 + seed / 1000."""
    for seed in SEEDS:
        for k, source in enumerate(SOURCES):
            run = root / "runs" / f"{seed}-resnet18-{source}"
            if run.name == skip:
                continue
            run.mkdir(parents=True)
            metrics = {"accuracy": 0.5 + seed / 1000 + k / 10, "precision_macro": 0.5, "recall_macro": 0.5,
                       "f1_macro": 0.4, "contrast_accuracy": 0.9, "contrast_gap": 0.4 - seed / 1000,
                       "accuracy_fst1": 0.9, "accuracy_fst2": 0.9, "accuracy_fst5": 0.5, "accuracy_fst6": 0.5}
            (run / "metrics.json").write_text(json.dumps(metrics))
            confusion = pd.DataFrame([[3, 1], [0, 4]], index=pd.Index(CONDITIONS, name="label"), columns=CONDITIONS)
            confusion.reset_index().to_csv(run / "confusion.csv", index=False)
    return root / "runs"


def write_inputs(root: Path) -> tuple[Path, Path, Path]:
    """splits/seed=<n>.csv, images/ and synthetic/seed=<n>/ (with manifest) for the pairs figure."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in SEEDS:
        split = pd.DataFrame({"md5hash": [f"{c}{i}".ljust(32, "0") for c in "ab" for i in range(3)],
                              "label": [c for c in CONDITIONS for _ in range(3)], "fitzpatrick_scale": [1, 5, 1] * 2,
                              "role": ["train", "test", "contrast"] * 2})
        (root / "splits").mkdir(exist_ok=True)
        split.to_csv(root / "splits" / f"seed={seed}.csv", index=False)
        train = split[split.role == "train"]
        rows = [{"path": f"{md5}_{j}.png", "source_md5hash": md5, "label": label, "source_fitzpatrick_scale": 1,
                 "fitzpatrick_scale": 5 + j, "prompt": "p", "seed": j, "strength": 0.7, "guidance_scale": 3.0,
                 "num_inference_steps": 2, "strategy": "img2img-ti+lora"}
                for md5, label in zip(train.md5hash, train.label, strict=True) for j in range(2)]
        synthetic = root / "synthetic" / f"seed={seed}"
        synthetic.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(synthetic / "manifest.csv", index=False)
        for row in rows:
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(synthetic / row["path"])
    (root / "images").mkdir()
    for md5 in split.md5hash:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{md5}.png")
    return root / "splits", root / "images", root / "synthetic"


def aggregate(root: Path, runs: Path):
    args = ["aggregate", "--runs", str(runs), "--out", str(root / "metrics.json"), "--params", str(write_params(root))]
    return CliRunner().invoke(app, args)


def test_aggregate_writes_mean_and_sample_std(tmp_path):
    result = aggregate(tmp_path, write_runs(tmp_path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resnet18.real.accuracy.mean"] == pytest.approx(0.521)
    assert metrics["resnet18.real.accuracy.std"] == pytest.approx(np.std([0.5, 0.542], ddof=1))
    assert metrics["resnet18.real+syn.contrast_accuracy.mean"] == pytest.approx(0.9)
    assert {f"resnet18.{source}.f1_macro.std" for source in SOURCES} <= set(metrics)


def test_aggregate_names_the_missing_run(tmp_path):
    result = aggregate(tmp_path, write_runs(tmp_path, skip="42-resnet18-syn"))
    assert result.exit_code == 2
    assert "42-resnet18-syn/metrics.json" in result.output
    assert not (tmp_path / "metrics.json").exists()


def test_report_writes_tables_and_figures(tmp_path):
    runs = write_runs(tmp_path)
    assert aggregate(tmp_path, runs).exit_code == 0
    splits, images, synthetic = write_inputs(tmp_path)
    out = tmp_path / "results"
    result = CliRunner().invoke(app, [
        "report", "--metrics", str(tmp_path / "metrics.json"), "--runs", str(runs), "--splits", str(splits),
        "--images", str(images), "--synthetic", str(synthetic), "--published", str(PUBLISHED), "--out", str(out),
        "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 0, result.output
    tables = (out / "tables.md").read_text()
    assert "Procedural stand-in" in tables
    assert "| ResNet-18 | real | 52.10 ± 2.97 | 50.00 ± 0.00 | 50.00 ± 0.00 | 40.00 ± 0.00 |" in tables
    assert "## Table 2 as published" in tables
    assert "| ResNet-18 | real | 68.45 ± 0.42 | 69.42 ± 0.57 | 69.05 ± 0.42 | 67.94 ± 0.35 |" in tables
    assert "| ViT-B-16 | real | 70.38 ± 0.42 |" in tables and "|  | real+syn | 78.65 ± 0.53 |" in tables
    assert "Contrast (light) accuracy" in tables and "| 90.00 ± 0.00 |" in tables
    assert "## Skin tone of the synthetic images (seed 0)" in tables
    assert "| 1 | 5 | 2 |" in tables and "| 1 | 6 | 2 |" in tables  # two type-1 sources, one image of each target
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "accuracy_per_fst.png", "confusion_resnet18.png", "pairs.png"]


def test_tone_table_measures_the_synthetic_skin(tmp_path):
    """A type-1 source (ITA 69) turned into a type-5 target (ITA -8) lands in both the type's and group's range;
    one left light does not."""
    light, dark = (241, 210, 190), (150, 100, 80)
    paths = {}
    for name, rgb in {"src": light, "dark": dark, "still_light": light}.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (96, 96), rgb).save(paths[name])
    manifest = pd.DataFrame({"source_md5hash": ["src", "src"], "source_fitzpatrick_scale": [1, 1],
                             "fitzpatrick_scale": [5, 5], "path": [paths["dark"], paths["still_light"]]})
    tones = tone_rows(manifest, tmp_path)
    assert tones.source_ita.round().tolist() == [69, 69]
    assert tones.synthetic_ita.round().tolist() == [-8, 69]
    assert "| 1 | 5 | 2 | 69.0 | 30.5 | 50% | 50% |" in tone_table(tones, [(1, 2), (5, 6)])


def test_figure_titles_name_the_stand_in():
    assert "procedural stand-in" in title_note("mini") and title_note("download") == ""
    fig = fst_accuracy_figure({}, ["resnet18"], SOURCES, [1, 5], title_note("mini"))
    assert "procedural stand-in" in fig.get_suptitle()


def exp_state(name: str, timestamp: str, strategy: str, target: str, accuracy: float) -> dict:
    params = {"setting": "i", "target_group": target, "generation": {"strategy": strategy}}
    metrics = {"vgg16.syn.accuracy.mean": accuracy, "vgg16.syn.accuracy.std": 0.01}
    return {"rev": name, "name": name, "data": {"timestamp": timestamp, "params": {"params.yaml": {"data": params}},
                                                "metrics": {"metrics/metrics.json": {"data": metrics}}}}


def test_table5_from_dvc_exp_show_json(tmp_path):
    baseline = exp_state("workspace", "2024-01-01T00:00:00", "img2img-ti+lora", "dark", 0.70)
    baseline["experiments"] = [{"revs": [exp_state("exp-b", "2024-01-03T00:00:00", "img2img-ti+lora", "dark", 0.8)]},
                               {"revs": [exp_state("exp-a", "2024-01-02T00:00:00", "txt2img-ti", "light", 0.3)]}]
    (tmp_path / "exps.json").write_text(json.dumps([baseline]))
    result = CliRunner().invoke(app, ["table5", "--exp-json", str(tmp_path / "exps.json"), "--published",
                                      str(PUBLISHED), "--out", str(tmp_path / "table5.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "table5.md").read_text()
    assert "| dark | – | – | – | – | – | 80.00 ± 1.00 |" in text
    assert "| light | – | 30.00 ± 1.00 | – | – | – | – |" in text
    assert "| dark | 21.22 | 44.64 | 69.64 | 71.43 | 73.21 | 79.57 |" in text
