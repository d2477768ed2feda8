"""The verified image folder shared by every stage: one `<md5hash>.<ext>` file per subset image."""

from __future__ import annotations

from pathlib import Path

from m2m.errors import M2MError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def find_image(folder: Path | str, md5hash: str) -> Path:
    """The image file of `md5hash` in `folder` (any of IMAGE_SUFFIXES)."""
    folder = Path(folder)
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{md5hash}{suffix}"
        if path.is_file():
            return path
    raise M2MError(f"{folder}: no image for md5hash {md5hash} (expected {md5hash}.png or .jpg)")


def load_rgb(path: Path | str):
    """Decode an image fully into an RGB PIL image; a clear error names an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise M2MError(f"{path}: not a readable image ({err})") from None
