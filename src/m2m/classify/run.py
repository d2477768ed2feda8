"""One classifier run end to end: rows -> image caches -> training -> predictions -> metrics (stage `classify`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from m2m.classify.data import eval_transform, image_set, real_rows, train_transform, training_rows
from m2m.classify.train import run_classifier
from m2m.evaluate import run_metrics
from m2m.params import ClassifierParams


@dataclass(frozen=True)
class RunOutputs:
    """Everything a run writes: checkpoint payload, flat metrics, and the tables of its output folder."""

    checkpoint: dict
    metrics: dict[str, float]
    predictions: pd.DataFrame  # md5hash, label, fitzpatrick_scale, role, pred, prob_<condition>...
    log: pd.DataFrame  # epoch, train_loss, val_loss, val_accuracy, val_f1_macro, lr
    per_class: pd.DataFrame  # label, precision, recall, f1, support (test rows)
    confusion: pd.DataFrame  # label x predicted counts (test rows)


def prediction_table(rows: pd.DataFrame, probs: np.ndarray, conditions: tuple[str, ...]) -> pd.DataFrame:
    """Evaluation rows with the predicted condition and one probability column per condition. probs: (N, C)."""
    table = rows[["md5hash", "label", "fitzpatrick_scale", "role"]].reset_index(drop=True)
    table["pred"] = [conditions[i] for i in probs.argmax(axis=1)]
    for i, condition in enumerate(conditions):
        table[f"prob_{condition}"] = probs[:, i]
    return table


def classify_run(split: pd.DataFrame, images: Path, synthetic: Path, source: str, arch: str, seed: int,
                 params: ClassifierParams, conditions: tuple[str, ...]) -> RunOutputs:
    """Train on `source` (real / syn / real+syn), select on val, then evaluate the test and contrast rows."""
    size, crop = params.image_size, params.crop_size
    train_rows = training_rows(split, source, images, synthetic, conditions)
    train_set = image_set(train_rows, conditions, size, train_transform(size, crop))
    val_set = image_set(real_rows(split, ["val"], images), conditions, size, eval_transform(size, crop))
    eval_rows = split[split.role.isin(["test", "contrast"])]

    def load_eval():
        return image_set(real_rows(eval_rows, ["test", "contrast"], images), conditions, size,
                         eval_transform(size, crop))

    result = run_classifier(arch, conditions, train_set, train_set.targets, val_set, load_eval, params, seed)
    predictions = prediction_table(eval_rows, result.eval_probs, conditions)
    metrics, full = run_metrics(predictions, conditions)
    metrics |= {"selected_epoch": result.selected_epoch, "n_train": len(train_rows), "n_val": len(val_set),
                "n_test": int((eval_rows.role == "test").sum())}
    checkpoint = {"state_dict": result.model.state_dict(), "conditions": list(conditions), "arch": arch,
                  "source": source, "seed": seed, "selected_epoch": result.selected_epoch,
                  "classifier": dataclasses.asdict(params)}
    confusion = pd.DataFrame(full["confusion"], index=pd.Index(conditions, name="label"), columns=conditions)
    return RunOutputs(checkpoint, metrics, predictions, result.log, full["per_class"].reset_index(),
                      confusion.reset_index())
