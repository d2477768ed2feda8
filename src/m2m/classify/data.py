"""Rows, images and transforms of one classifier run.

Rows are tables with columns path, md5hash, label, fitzpatrick_scale, role. Real rows come from a split (roles
train / val / test / contrast) and the verified image folder; synthetic rows from `<synthetic dir>/manifest.csv`,
whose `md5hash` is the real source image and whose `fitzpatrick_scale` is the target skin type of the prompt.

Every image is decoded ONCE per run into a uint8 tensor cache at `classifier.image_size` (shorter side resized,
then centre-cropped square); augmentation then runs on tensors, so an epoch costs no JPEG decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from m2m.data.imagefolder import find_image, load_rgb
from m2m.errors import M2MError

ROW_COLUMNS = ["path", "md5hash", "label", "fitzpatrick_scale", "role"]
MANIFEST_COLUMNS = (
    "path", "source_md5hash", "label", "source_fitzpatrick_scale", "fitzpatrick_scale", "prompt", "seed",
    "strength", "guidance_scale", "num_inference_steps", "strategy",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def real_rows(split: pd.DataFrame, roles: Sequence[str], images: Path) -> pd.DataFrame:
    """The split's rows with a role in `roles`, each with the path of its image in `images`."""
    rows = split[split.role.isin(roles)]
    return rows.assign(path=[str(find_image(images, md5)) for md5 in rows.md5hash])[ROW_COLUMNS]


def read_manifest(synthetic: Path) -> pd.DataFrame:
    """`<synthetic>/manifest.csv` with its columns checked and `path` made absolute."""
    path = Path(synthetic) / "manifest.csv"
    try:
        manifest = pd.read_csv(path, dtype={"source_md5hash": str, "path": str})
    except FileNotFoundError:
        raise M2MError(f"{path} not found: the synthetic set of this seed has not been generated") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise M2MError(f"{path}: missing columns {missing}")
    return manifest.assign(path=[str(Path(synthetic) / p) for p in manifest.path])


def synthetic_rows(split: pd.DataFrame, synthetic: Path) -> pd.DataFrame:
    """Training rows of the synthetic set, refusing any image generated from a test or contrast row.

    Images generated from `val` rows are dropped: the val rows select the classifier, so their synthetic
    variants must not be trained on.
    """
    manifest = read_manifest(synthetic)
    role_of = split.set_index("md5hash").role
    roles = manifest.source_md5hash.map(role_of)
    leaked = manifest[~roles.isin(["train", "val"])]
    if len(leaked):
        first = leaked.iloc[0]
        raise M2MError(f"{synthetic}/manifest.csv: {len(leaked)} images derive from images that are not training "
                       f"rows of the split, e.g. {first.path} from {first.source_md5hash} "
                       f"(role {roles[first.name] if pd.notna(roles[first.name]) else 'absent'})")
    kept = manifest[roles == "train"]
    return kept.assign(md5hash=kept.source_md5hash, role="train")[ROW_COLUMNS]


def training_rows(split: pd.DataFrame, source: str, images: Path, synthetic: Path,
                  conditions: Sequence[str]) -> pd.DataFrame:
    """Training rows of `source` (real / syn / real+syn); every condition must be present.

    The synthetic folder is read only when the source uses it.
    """
    parts = []
    if source in ("real", "real+syn"):
        parts.append(real_rows(split, ["train"], images))
    if source in ("syn", "real+syn"):
        parts.append(synthetic_rows(split, synthetic))
    if not parts:
        raise M2MError(f"--source must be real, syn or real+syn, got {source!r}")
    rows = pd.concat(parts, ignore_index=True)
    check_labels(rows, conditions, f"training source {source!r}")
    return rows


def check_labels(rows: pd.DataFrame, conditions: Sequence[str], what: str) -> None:
    """Raise unless `rows` has an image of every condition (unknown labels are caught by `image_set`)."""
    missing = [c for c in conditions if c not in set(rows.label)]
    if missing:
        raise M2MError(f"{what} has no image of condition(s) {missing}: the label map (data.conditions) "
                       f"needs every condition in training")


def decode_images(paths: Sequence[str], size: int) -> torch.Tensor:
    """Decode, resize the shorter side to `size` and centre-crop: returns (N, 3, size, size) uint8."""
    from torchvision.transforms.v2 import functional as F

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        image = F.pil_to_tensor(load_rgb(path))  # (3, H, W) uint8
        image = F.resize(image, [size], antialias=True)
        out[i] = F.center_crop(image, [size, size])
    return out


def train_transform(image_size: int, crop_size: int):
    """Augmentation of the original implementation, on (3, S, S) uint8 tensors -> (3, crop, crop) float.

    RandomResizedCrop(image_size, scale 0.8-1) - RandomRotation(15) - ColorJitter - RandomHorizontalFlip -
    CenterCrop(crop_size) - ImageNet normalisation. Hue is not jittered: it would shift skin tone, the attribute
    under study.
    """
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.RandomHorizontalFlip(),
        v2.CenterCrop(crop_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int, crop_size: int):
    """Resize(image_size) - CenterCrop(crop_size) - ImageNet normalisation; (3, S, S) uint8 -> (3, crop, crop)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(image_size, antialias=True),
        v2.CenterCrop(crop_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ImageSet(Dataset):
    """Cached images with integer targets; `__getitem__` returns (transformed image, target)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform):
        """images: (N, 3, S, S) uint8; targets: (N,) int64 indices into the label map."""
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.targets[i]


def image_set(rows: pd.DataFrame, conditions: Sequence[str], image_size: int, transform) -> ImageSet:
    """Decode `rows` once into an ImageSet; targets follow the order of `conditions`."""
    index = {condition: i for i, condition in enumerate(conditions)}
    unknown = sorted(set(rows.label) - set(index))
    if unknown:
        raise M2MError(f"labels {unknown} are not in data.conditions {list(conditions)}")
    targets = torch.tensor([index[label] for label in rows.label], dtype=torch.int64)
    return ImageSet(decode_images(list(rows.path), image_size), targets, transform)
