"""Classification metrics of one run and their aggregation over repetition seeds (stages `classify`, `aggregate`).

Headline precision, recall and F1 are MACRO averages (every condition weighs the same): the paper's test sets are
uniform over the 7 conditions in setting i, and its numbers behave like macro averages. Weighted averages are reported
beside them. `zero_division=0` is explicit: a condition never predicted scores precision 0, not a warning.

Aggregation reports the mean and the SAMPLE standard deviation (ddof=1) over repetition seeds; with a single seed the
std is undefined and its key is left out rather than written as 0 or NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from m2m.errors import M2MError

#: the scalar keys of `classification_metrics`, in report order.
SCALAR_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro and weighted precision/recall/F1, a per-class report and the confusion matrix.

    Args:
        y_true, y_pred: condition names, one per image.
        labels: every condition in label-map order; fixes the order of `per_class` and `confusion`.
    Returns:
        the SCALAR_METRICS as floats in [0, 1]; `per_class`: DataFrame indexed by condition with columns precision,
        recall, f1, support; `confusion`: (C, C) int array, rows = true condition, columns = predicted.
    """
    labels = list(labels)
    unknown = sorted(set(y_true) - set(labels))
    if unknown:
        raise M2MError(f"labels {unknown} are not in data.conditions {labels}")
    metrics = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        metrics |= {f"precision_{average}": float(precision), f"recall_{average}": float(recall),
                    f"f1_{average}": float(f1)}
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    metrics["per_class"] = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support}, index=pd.Index(labels, name="label")
    )
    metrics["confusion"] = confusion_matrix(y_true, y_pred, labels=labels)
    return metrics


def accuracy_by_group(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence[int]) -> dict[int, float]:
    """Accuracy within each group (e.g. Fitzpatrick type), keyed by group, sorted."""
    frame = pd.DataFrame({"correct": np.asarray(y_true) == np.asarray(y_pred), "group": list(groups)})
    return {int(group): float(correct.mean()) for group, correct in frame.groupby("group").correct}


def run_metrics(predictions: pd.DataFrame, labels: Sequence[str]) -> tuple[dict[str, float], dict]:
    """Flat metrics of one run from its predictions (columns label, pred, fitzpatrick_scale, role).

    Test rows give the headline metrics; `contrast` rows (the other skin-type group, never trained on) give
    `contrast_accuracy` and `contrast_gap` = contrast_accuracy - accuracy (light minus dark when the target is dark).
    `accuracy_fst<n>` is computed over test and contrast rows: the two groups never share a Fitzpatrick type.
    Returns (flat dict of floats, the test rows' full `classification_metrics`).
    """
    test = predictions[predictions.role == "test"]
    if test.empty:
        raise M2MError("no test rows to evaluate (split has no role 'test')")
    full = classification_metrics(test.label, test.pred, labels)
    flat = {key: full[key] for key in SCALAR_METRICS}
    contrast = predictions[predictions.role == "contrast"]
    if not contrast.empty:
        flat["contrast_accuracy"] = float(accuracy_score(contrast.label, contrast.pred))
        flat["contrast_gap"] = flat["contrast_accuracy"] - flat["accuracy"]
    evaluated = predictions[predictions.role.isin(["test", "contrast"])]
    by_fst = accuracy_by_group(evaluated.label, evaluated.pred, evaluated.fitzpatrick_scale)
    flat |= {f"accuracy_fst{fst}": value for fst, value in by_fst.items()}
    return flat, full


def aggregate(runs: Mapping[tuple[int, str, str], Mapping[str, float]]) -> dict[str, float]:
    """Mean and sample std (ddof=1) over seeds of every numeric metric, per architecture x source.

    Args:
        runs: (seed, arch, source) -> that run's flat metrics.
    Returns:
        flat keys `<arch>.<source>.<metric>.mean` and, with two or more seeds, `<arch>.<source>.<metric>.std`;
        a metric missing from some seeds of a group averages over the seeds that have it.
    """
    frame = pd.DataFrame(
        [{"arch": arch, "source": source, "seed": seed, **metrics} for (seed, arch, source), metrics in runs.items()]
    )
    out: dict[str, float] = {}
    for (arch, source), group in frame.groupby(["arch", "source"], sort=False):
        values = group.drop(columns=["arch", "source", "seed"]).dropna(axis=1, how="all")
        for metric in values.columns:
            column = values[metric].dropna().astype(float)
            out[f"{arch}.{source}.{metric}.mean"] = float(column.mean())
            if len(column) >= 2:
                out[f"{arch}.{source}.{metric}.std"] = float(column.std(ddof=1))
    return out
