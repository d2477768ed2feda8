"""Metrics of one run equal scikit-learn's; aggregation is mean and sample std (ddof=1) over seeds."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from m2m.errors import M2MError
from m2m.evaluate import SCALAR_METRICS, accuracy_by_group, aggregate, classification_metrics, run_metrics

LABELS = ["a", "b", "c"]
Y_TRUE = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "a"]
Y_PRED = ["a", "b", "a", "b", "c", "c", "c", "a", "c", "a"]


def test_classification_metrics_equal_sklearn():
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED)) == pytest.approx(0.7)
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS, average=average, zero_division=0)
        assert (metrics[f"precision_{average}"], metrics[f"recall_{average}"], metrics[f"f1_{average}"]) == \
            pytest.approx((p, r, f))
    np.testing.assert_array_equal(metrics["confusion"], confusion_matrix(Y_TRUE, Y_PRED, labels=LABELS))
    assert list(metrics["per_class"].index) == LABELS
    assert metrics["per_class"].loc["c", "recall"] == pytest.approx(3 / 4)
    assert metrics["per_class"].support.tolist() == [4, 2, 4]


def test_hand_computed_macro_values():
    # per class precision a 3/4, b 1/2, c 3/4; recall a 3/4, b 1/2, c 3/4
    metrics = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert metrics["precision_macro"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    assert metrics["recall_weighted"] == pytest.approx(0.7)


def test_never_predicted_class_scores_zero_without_warning():
    with_unpredicted = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    assert with_unpredicted["per_class"].loc["b", "precision"] == 0


def test_unknown_label_is_an_error():
    with pytest.raises(M2MError, match="not in data.conditions"):
        classification_metrics(["z"], ["a"], LABELS)


def test_accuracy_by_group():
    assert accuracy_by_group(["a", "b", "c", "a"], ["a", "a", "c", "b"], [5, 5, 6, 6]) == {5: 0.5, 6: 0.5}


def test_run_metrics_flat_keys_and_contrast_gap():
    predictions = pd.DataFrame({
        "label": ["a", "b", "a", "b", "a", "b"],
        "pred": ["a", "b", "a", "a", "b", "b"],
        "fitzpatrick_scale": [5, 6, 5, 6, 1, 2],
        "role": ["test"] * 4 + ["contrast"] * 2,
    })
    flat, _ = run_metrics(predictions, ["a", "b"])
    assert set(SCALAR_METRICS) <= set(flat)
    assert flat["accuracy"] == 0.75
    assert flat["contrast_accuracy"] == 0.5
    assert flat["contrast_gap"] == pytest.approx(-0.25)
    assert (flat["accuracy_fst5"], flat["accuracy_fst6"], flat["accuracy_fst1"]) == (1.0, 0.5, 0.0)


def test_aggregate_mean_and_sample_std():
    runs = {
        (0, "resnet18", "real"): {"accuracy": 0.5, "f1_macro": 0.4},
        (42, "resnet18", "real"): {"accuracy": 0.7, "f1_macro": 0.6},
        (7, "resnet18", "real"): {"accuracy": 0.9, "f1_macro": 0.5},
        (0, "resnet18", "real+syn"): {"accuracy": 0.8, "f1_macro": 0.8},
        (42, "resnet18", "real+syn"): {"accuracy": 0.6, "f1_macro": 0.8},
    }
    out = aggregate(runs)
    assert out["resnet18.real.accuracy.mean"] == pytest.approx(0.7)
    # sample std of (0.5, 0.7, 0.9): sqrt(((-0.2)^2 + 0 + 0.2^2) / (3 - 1)) = 0.2
    assert out["resnet18.real.accuracy.std"] == pytest.approx(0.2)
    assert out["resnet18.real+syn.accuracy.std"] == pytest.approx(math.sqrt(0.02))
    assert out["resnet18.real+syn.f1_macro.std"] == 0
    assert out["resnet18.real.accuracy.std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


def test_aggregate_single_seed_has_no_std():
    out = aggregate({(0, "vgg16", "syn"): {"accuracy": 0.5}})
    assert out == {"vgg16.syn.accuracy.mean": 0.5}
