"""Seeded training, model selection and prediction of one classifier run.

Adam (`classifier.learning_rate`), StepLR(step = max(1, epochs // 3), `classifier.lr_gamma`), cross-entropy, and a
class-balanced WeightedRandomSampler, as in the paper. Model selection never looks at the test set (the original
implementation kept the epoch with the lowest TEST loss; we do not): `last` keeps the final epoch, `val` keeps the
epoch with the best validation macro-F1 (ties: lower validation loss, then the earlier epoch). The evaluation rows
are loaded by a callable invoked only after training has finished, so they are read once, after training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from m2m.classify.models import build_model
from m2m.devices import resolve_device
from m2m.errors import M2MError
from m2m.params import ClassifierParams

LOG_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr"]


@dataclass(frozen=True)
class RunResult:
    """A trained run: the selected model, its training log, and class probabilities of the evaluation rows."""

    model: nn.Module
    log: pd.DataFrame
    selected_epoch: int
    eval_probs: np.ndarray  # (N_eval, C) softmax probabilities


def balanced_sampler(targets: torch.Tensor, num_classes: int, batch_size: int,
                     generator: torch.Generator) -> WeightedRandomSampler:
    """Draw with replacement, each class equally likely, ceil(N / batch_size) FULL batches per epoch.

    Full batches: a last batch of one image would break BatchNorm where the feature map is 1x1 (small crops).
    targets: (N,) int64.
    """
    counts = torch.bincount(targets, minlength=num_classes).clamp(min=1).double()
    num_samples = -(-len(targets) // batch_size) * batch_size
    return WeightedRandomSampler((1.0 / counts)[targets], num_samples, replacement=True, generator=generator)


def loader(dataset: Dataset, params: ClassifierParams, generator: torch.Generator, sampler=None) -> DataLoader:
    """A DataLoader whose worker seeds derive from `generator` (deterministic for any num_workers)."""
    return DataLoader(dataset, batch_size=params.batch_size, sampler=sampler, num_workers=params.num_workers,
                      generator=generator)


def train_epoch(model: nn.Module, batches: DataLoader, optimizer, device: torch.device) -> float:
    """One pass over `batches`; returns the mean cross-entropy per sample."""
    model.train()
    total, count = 0.0, 0
    for images, targets in batches:  # images: (B, 3, crop, crop) float; targets: (B,) int64
        images, targets = images.to(device), targets.to(device)
        loss = nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(targets), count + len(targets)
    return total / count


@torch.no_grad()
def predict(model: nn.Module, batches: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, C) and targets (N,) of every batch, in dataset order."""
    model.eval()
    probs, targets = [], []
    for images, target in batches:
        probs.append(model(images.to(device)).softmax(dim=1).cpu())
        targets.append(target)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def validate(model: nn.Module, batches: DataLoader, num_classes: int, device: torch.device) -> dict[str, float]:
    """Validation loss (mean cross-entropy), accuracy and macro-F1."""
    probs, targets = predict(model, batches, device)
    pred = probs.argmax(axis=1)
    loss = nn.functional.nll_loss(torch.from_numpy(probs).clamp(min=1e-12).log(), torch.from_numpy(targets))
    return {"val_loss": float(loss), "val_accuracy": float((pred == targets).mean()),
            "val_f1_macro": float(f1_score(targets, pred, labels=range(num_classes), average="macro",
                                           zero_division=0))}


def is_better(row: dict, best: dict | None) -> bool:
    """Model selection on val: higher macro-F1, then lower loss; an equal epoch does not replace an earlier one."""
    return best is None or (row["val_f1_macro"], -row["val_loss"]) > (best["val_f1_macro"], -best["val_loss"])


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, targets: torch.Tensor, num_classes: int,
        params: ClassifierParams, seed: int, device: torch.device) -> tuple[pd.DataFrame, int]:
    """Train `model` in place and load the selected epoch's weights; returns (training log, selected epoch).

    targets: (N,) int64 labels of `train_set`, for the class-balanced sampler.
    """
    if params.model_selection == "val" and len(val_set) == 0:
        raise M2MError("classifier.model_selection is val but the split has no val rows "
                       "(splits.val_fraction is 0); set classifier.model_selection=last")
    generator = torch.Generator().manual_seed(seed)
    sampler = balanced_sampler(targets, num_classes, params.batch_size, generator)
    train_batches = loader(train_set, params, generator, sampler)
    val_batches = loader(val_set, params, generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=params.learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, params.epochs // 3), gamma=params.lr_gamma)
    log, best, best_state = [], None, None
    for epoch in range(1, params.epochs + 1):
        row = {"epoch": epoch, "lr": scheduler.get_last_lr()[0],
               "train_loss": train_epoch(model, train_batches, optimizer, device)}
        if len(val_set):
            row |= validate(model, val_batches, num_classes, device)
        scheduler.step()
        log.append(row)
        if params.model_selection == "val" and is_better(row, best):
            best, best_state = row, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    selected = best["epoch"] if best else params.epochs
    return pd.DataFrame(log, columns=LOG_COLUMNS), selected  # val columns are NaN without val rows


def run_classifier(arch: str, conditions: tuple[str, ...], train_set: Dataset, targets: torch.Tensor,
                   val_set: Dataset, load_eval: Callable[[], Dataset], params: ClassifierParams,
                   seed: int) -> RunResult:
    """Seed, build, train and select a model, then load the evaluation rows and predict them.

    Args:
        targets: (N_train,) int64 labels of `train_set` (indices into `conditions`).
        load_eval: called once, after training, to read the test and contrast rows.
    """
    torch.manual_seed(seed)
    device = resolve_device(params.device, "classifier.device")
    model = build_model(arch, len(conditions), params.pretrained, params.freeze_backbone, params.crop_size)
    model.to(device)
    log, selected = fit(model, train_set, val_set, targets, len(conditions), params, seed, device)
    eval_batches = loader(load_eval(), params, torch.Generator().manual_seed(seed))
    probs, _ = predict(model, eval_batches, device)
    return RunResult(model=model, log=log, selected_epoch=selected, eval_probs=probs)
