"""Individual typology angle (ITA): a skin-tone measure from CIELAB, and its Fitzpatrick-type ranges.

ITA = arctan((L* - 50) / b*) in degrees, with L*, b* from sRGB under D65. Ranges used by this project (the issue's):
I > 55, II 41-55, III 28-41, IV 10-28, V -30-10, VI < -30 degrees.
"""

from __future__ import annotations

import numpy as np

from m2m.errors import M2MError

#: Fitzpatrick type -> (lowest, highest) ITA in degrees; ITA spans -90..90.
ITA_RANGES: dict[int, tuple[float, float]] = {
    1: (55.0, 90.0),
    2: (41.0, 55.0),
    3: (28.0, 41.0),
    4: (10.0, 28.0),
    5: (-30.0, 10.0),
    6: (-90.0, -30.0),
}

_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours.

    rgb: (..., 3) in [0, 1]. Returns (..., 3) = L* in [0, 100], a*, b* (roughly -128..127).
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (clipped) of CIELAB (D65) colours; inverse of `srgb_to_lab`. lab: (..., 3)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _D65_WHITE
    linear = np.clip(xyz @ np.linalg.inv(_SRGB_TO_XYZ).T, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def ita_of_lab(lightness, b_star):
    """ITA in degrees of L* and b* (scalars or arrays); b* = 0 maps to +-90."""
    return np.degrees(np.arctan2(np.asarray(lightness) - 50.0, np.asarray(b_star)))


def ita_of_image(image, mask: np.ndarray | None = None) -> float:
    """ITA of an image from the median L* and b* of its skin pixels.

    image: PIL image or (H, W, 3) uint8 array; mask: optional (H, W) bool of skin pixels (default: all pixels).
    """
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float64) / 255.0
    lab = srgb_to_lab(rgb).reshape(-1, 3)
    if mask is not None:
        lab = lab[np.asarray(mask, dtype=bool).reshape(-1)]
    if len(lab) == 0:
        raise M2MError("no skin pixels to measure ITA on")
    return float(ita_of_lab(np.median(lab[:, 0]), np.median(lab[:, 2])))


def fst_of_ita(ita: float) -> int:
    """The Fitzpatrick type (1-6) whose ITA range holds `ita` (a value on a boundary goes to the darker type)."""
    return next((fst for fst in range(1, 6) if ita > ITA_RANGES[fst][0]), 6)
