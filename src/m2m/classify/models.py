"""torchvision backbones with a new classification head.

`freeze_backbone=True` reproduces the original implementation: every pretrained weight frozen, the final layer
replaced by Linear(in, 256) - ReLU - Dropout(0.4) - Linear(256, C). (BatchNorm running statistics still follow the
training data in train mode, as in torchvision's usual fine-tuning recipe.) `freeze_backbone=False` fine-tunes every
weight under a new final Linear(in, C).
"""

from __future__ import annotations

from torch import nn

from m2m.errors import M2MError

#: where each architecture keeps its final Linear: (parent attribute path, child name).
FINAL_LAYER = {"vgg16": ("classifier", "6"), "resnet18": ("", "fc"), "vit_b_16": ("heads", "head")}
VIT_PATCH = 16
VIT_PRETRAINED_SIZE = 224


def head(in_features: int, num_classes: int, freeze_backbone: bool) -> nn.Module:
    """The new final layer: the original implementation's MLP head when the backbone is frozen, else a Linear."""
    if freeze_backbone:
        return nn.Sequential(nn.Linear(in_features, 256), nn.ReLU(), nn.Dropout(0.4), nn.Linear(256, num_classes))
    return nn.Linear(in_features, num_classes)


def load_backbone(arch: str, pretrained: bool, crop_size: int) -> nn.Module:
    """The torchvision model `arch`, with ImageNet weights ("DEFAULT") if `pretrained`.

    Raises M2MError when the weights cannot be downloaded (offline) or `crop_size` does not fit ViT-B-16.
    """
    from torchvision import models

    kwargs = {}
    if arch == "vit_b_16":
        if crop_size % VIT_PATCH:
            raise M2MError(f"vit_b_16 needs classifier.crop_size divisible by its patch size {VIT_PATCH}, "
                           f"got {crop_size}")
        if pretrained and crop_size != VIT_PRETRAINED_SIZE:
            raise M2MError(f"vit_b_16 ImageNet weights need classifier.crop_size={VIT_PRETRAINED_SIZE}, "
                           f"got {crop_size}")
        kwargs["image_size"] = crop_size
    try:
        return models.get_model(arch, weights="DEFAULT" if pretrained else None, **kwargs)
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        raise M2MError(f"cannot download ImageNet weights for {arch} ({err}); offline, train from scratch with "
                       f"-S classifier.pretrained=false (and classifier.freeze_backbone=false)") from None


def build_model(arch: str, num_classes: int, pretrained: bool, freeze_backbone: bool, crop_size: int) -> nn.Module:
    """`arch` with its final Linear replaced by `head(...)`; frozen except the head when `freeze_backbone`."""
    if arch not in FINAL_LAYER:
        raise M2MError(f"--arch must be one of {', '.join(FINAL_LAYER)}, got {arch!r}")
    model = load_backbone(arch, pretrained, crop_size)
    if freeze_backbone:
        model.requires_grad_(False)
    parent_path, name = FINAL_LAYER[arch]
    parent = model.get_submodule(parent_path)
    old = parent.get_submodule(name)
    setattr(parent, name, head(old.in_features, num_classes, freeze_backbone))
    return model
