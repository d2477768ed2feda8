"""Classifier runs: a tiny end-to-end `m2m classify`, label-map checks, the test set read only after training."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from m2m.classify.data import ImageSet, training_rows
from m2m.classify.models import build_model
from m2m.classify.train import run_classifier
from m2m.cli import app
from m2m.errors import M2MError
from m2m.evaluate import SCALAR_METRICS
from m2m.params import read_params_file

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = ["psoriasis", "folliculitis", "prurigo nodularis"]
#: role -> Fitzpatrick types of its rows, one image each, per condition
ROLE_FST = {"train": [1, 2, 5], "val": [2], "test": [5, 6], "contrast": [1, 2]}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_png(path: Path, rng: np.random.Generator, tint: int) -> None:
    pixels = rng.integers(0, 128, (16, 16, 3), dtype=np.uint8)
    pixels[..., tint] += 100
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_world(root: Path, conditions=CONDITIONS, syn_conditions=CONDITIONS) -> tuple[Path, Path, Path]:
    """A split, 16-px images and a synthetic set with its manifest; returns (split csv, images, synthetic)."""
    rng = np.random.default_rng(0)
    rows = [{"md5hash": f"{k}{role}{i}".ljust(32, "0"), "label": condition, "fitzpatrick_scale": fst, "role": role}
            for k, condition in enumerate(conditions) for role, fsts in ROLE_FST.items() for i, fst in enumerate(fsts)]
    split = pd.DataFrame(rows)
    split.to_csv(root / "split.csv", index=False)
    for row in rows:
        write_png(root / "images" / f"{row['md5hash']}.png", rng, conditions.index(row["label"]))
    train = split[(split.role == "train") & split.label.isin(syn_conditions)]
    manifest = pd.DataFrame({
        "path": [f"img/{md5}_0.png" for md5 in train.md5hash], "source_md5hash": train.md5hash,
        "label": train.label, "source_fitzpatrick_scale": train.fitzpatrick_scale, "fitzpatrick_scale": 6,
        "prompt": "p", "seed": 0, "strength": 0.7, "guidance_scale": 3.0, "num_inference_steps": 2,
        "strategy": "img2img-ti+lora"})
    for path, label in zip(manifest.path, manifest.label, strict=True):
        write_png(root / "syn" / path, rng, conditions.index(label))
    manifest.to_csv(root / "syn" / "manifest.csv", index=False)
    return root / "split.csv", root / "images", root / "syn"


def write_params(root: Path, **classifier) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["conditions"] = CONDITIONS
    raw["classifier"] |= {"archs": ["resnet18"], "pretrained": False, "freeze_backbone": False, "epochs": 1,
                          "batch_size": 8, "image_size": 20, "crop_size": 16, "num_workers": 0, "device": "cpu",
                          "model_selection": "val"} | classifier
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def classify_args(root: Path, split: Path, images: Path, synthetic: Path, source: str) -> list[str]:
    return ["classify", "--split", str(split), "--images", str(images), "--synthetic", str(synthetic),
            "--seed", "0", "--arch", "resnet18", "--source", source, "--checkpoint", str(root / "model.pt"),
            "--out", str(root / "run"), "--train-log", str(root / "train_log.csv"),
            "--params", str(write_params(root))]


def test_classify_end_to_end_writes_every_metric_key(tmp_path):
    split, images, synthetic = write_world(tmp_path)
    result = CliRunner().invoke(app, classify_args(tmp_path, split, images, synthetic, "real+syn"))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    expected = {*SCALAR_METRICS, "contrast_accuracy", "contrast_gap", "accuracy_fst1", "accuracy_fst2",
                "accuracy_fst5", "accuracy_fst6", "selected_epoch", "n_train", "n_val", "n_test"}
    assert expected <= set(metrics)
    assert metrics["n_train"] == 2 * 3 * len(CONDITIONS) and metrics["n_test"] == 2 * len(CONDITIONS)
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(predictions.columns[:5]) == ["md5hash", "label", "fitzpatrick_scale", "role", "pred"]
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{c}" for c in CONDITIONS]
    assert sorted(predictions.role.unique()) == ["contrast", "test"]
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log.columns[:5]) == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_f1_macro"]
    assert log.epoch.tolist() == [1]
    confusion = pd.read_csv(tmp_path / "run" / "confusion.csv", index_col="label")
    assert confusion.shape == (3, 3) and confusion.to_numpy().sum() == metrics["n_test"]
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=False)
    assert checkpoint["conditions"] == CONDITIONS and checkpoint["arch"] == "resnet18"
    assert checkpoint["classifier"]["crop_size"] == 16


def test_real_source_does_not_read_the_synthetic_folder(tmp_path):
    split, images, _ = write_world(tmp_path)
    result = CliRunner().invoke(app, classify_args(tmp_path, split, images, tmp_path / "absent", "real"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_train"] == 3 * len(CONDITIONS)


def test_condition_missing_from_a_training_source_is_an_error(tmp_path):
    split, images, synthetic = write_world(tmp_path, syn_conditions=CONDITIONS[:2])
    with pytest.raises(M2MError, match="prurigo nodularis"):
        training_rows(pd.read_csv(split), "syn", images, synthetic, CONDITIONS)
    result = CliRunner().invoke(app, classify_args(tmp_path, split, images, synthetic, "syn"))
    assert result.exit_code == 2 and "has no image of condition" in result.output
    assert not (tmp_path / "run").exists()


def test_synthetic_image_of_a_test_row_is_refused(tmp_path):
    split, images, synthetic = write_world(tmp_path)
    manifest = pd.read_csv(synthetic / "manifest.csv")
    rows = pd.read_csv(split)
    manifest.loc[0, "source_md5hash"] = rows[rows.role == "test"].md5hash.iloc[0]
    manifest.to_csv(synthetic / "manifest.csv", index=False)
    with pytest.raises(M2MError, match="role test"):
        training_rows(rows, "real+syn", images, synthetic, CONDITIONS)


class Spy(torch.utils.data.Dataset):
    """Records every read in a shared event list."""

    def __init__(self, inner, name: str, events: list):
        self.inner, self.name, self.events = inner, name, events

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.events.append(self.name)
        return self.inner[i]


def tiny_set(n: int, seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.arange(n) % 3, lambda image: image.float() / 255)


def spy_run(root: Path, events: list, seed: int = 0):
    params = read_params_file(write_params(root, epochs=2)).classifier
    train, val, test = tiny_set(12, 1), tiny_set(6, 2), tiny_set(6, 3)

    def load_eval():
        events.append("load_eval")
        return Spy(test, "test", events)

    return run_classifier("resnet18", tuple(CONDITIONS), Spy(train, "train", events), train.targets,
                          Spy(val, "val", events), load_eval, params, seed)


def test_test_set_is_read_once_and_only_after_training(tmp_path):
    events = []
    result = spy_run(tmp_path, events)
    first_eval = events.index("load_eval")
    assert "test" not in events[:first_eval]
    assert {"train", "val"} <= set(events[:first_eval]) and not {"train", "val"} & set(events[first_eval:])
    assert events[first_eval + 1:].count("test") == 6
    assert result.eval_probs.shape == (6, 3) and len(result.log) == 2


def test_runs_are_deterministic_on_cpu(tmp_path):
    first, second = spy_run(tmp_path, [], seed=3), spy_run(tmp_path, [], seed=3)
    np.testing.assert_array_equal(first.eval_probs, second.eval_probs)
    pd.testing.assert_frame_equal(first.log, second.log)


def test_frozen_backbone_trains_only_the_original_head():
    model = build_model("resnet18", 7, pretrained=False, freeze_backbone=True, crop_size=32)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.0.weight", "fc.0.bias", "fc.3.weight", "fc.3.bias"]
    assert model.fc[0].in_features == 512 and model.fc[3].out_features == 7
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_vit_crop_must_fit_the_patch_size():
    model = build_model("vit_b_16", 3, pretrained=False, freeze_backbone=False, crop_size=16)
    assert model.heads.head.out_features == 3
    with pytest.raises(M2MError, match="patch size"):
        build_model("vit_b_16", 3, pretrained=False, freeze_backbone=False, crop_size=20)


def test_offline_pretrained_weights_name_the_fix(monkeypatch):
    from urllib.error import URLError

    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(M2MError, match="classifier.pretrained=false"):
        build_model("resnet18", 3, pretrained=True, freeze_backbone=True, crop_size=32)
