"""Classifiers trained on real, synthetic or real+synthetic images (stage `classify`, paper Tables 2-5).

- `data`: which rows train, validate and evaluate a run; a uint8 image cache decoded once per run; transforms.
- `models`: torchvision VGG-16 / ResNet-18 / ViT-B-16 with a new head.
- `train`: seeded training (Adam, StepLR, class-balanced sampler), model selection on val, prediction.

A run is identified by repetition seed, architecture and training source; `run_name` is the folder name the
pipeline uses for it (dvc.yaml writes the same `<seed>-<arch>-<source>` pattern).
"""


def run_name(seed: int, arch: str, source: str) -> str:
    """The run folder name, e.g. `0-resnet18-real+syn`."""
    return f"{seed}-{arch}-{source}"
