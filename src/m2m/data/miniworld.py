"""The "mini world": procedural stand-in skin images (NOT dermatology data) for offline runs of the pipeline.

Every image is drawn deterministically from a key (the Fitzpatrick17k row's md5hash, or a pretraining index):
skin whose colour lies inside the Fitzpatrick type's ITA range (see `m2m.data.ita`), with lighting, blotchy
pigment, pores and per-image variation, plus one lesion morphology per study condition. Colours are composed in
CIELAB so that tone-dependent appearance follows real skin: erythema is less red, more violaceous or brown and
lower in contrast on dark skin; scale and pus are near-absolute colours, so they stand out more on dark skin. A
classifier trained on light skin alone therefore meets a real domain gap on dark skin.

`render_pretraining_image` draws the separate pretraining corpus of the embedded base model: the same skin with
generic lesions (moles, freckles, scars, bruises, plain macules) and none of the 7 study morphologies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from m2m.data.ita import ITA_RANGES, lab_to_srgb
from m2m.errors import M2MError

CONDITIONS = (
    "basal cell carcinoma",
    "folliculitis",
    "nematode infection",
    "neutrophilic dermatoses",
    "prurigo nodularis",
    "psoriasis",
    "squamous cell carcinoma",
)
GENERIC_LESIONS = ("skin", "mole", "freckles", "scar", "bruise", "macule")
ITA_MARGIN = 3.0  # degrees kept between a drawn skin colour and its type's range boundaries


def rng_of(key: str) -> np.random.Generator:
    """A numpy Generator seeded by the SHA-256 of `key` (md5 hashes and indices alike)."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "little"))


@dataclass(frozen=True)
class Canvas:
    """A coordinate grid and the image being composed on it.

    x, y: (H, W) in [-1, 1]; lab: (H, W, 3) CIELAB, edited in place; tone: 1 = lightest skin, 0 = darkest.
    """

    x: np.ndarray
    y: np.ndarray
    lab: np.ndarray
    tone: float

    @property
    def pixel(self) -> float:
        """Width of one pixel in grid units."""
        return 2.0 / self.x.shape[0]


# ----------------------------------------------------------------------------------------------------- skin


def skin_lab(rng: np.random.Generator, fitzpatrick_scale: int) -> tuple[float, float, float]:
    """A base skin colour (L*, a*, b*) whose ITA lies inside the type's range, ITA_MARGIN from its ends."""
    if fitzpatrick_scale not in ITA_RANGES:
        raise M2MError(f"Fitzpatrick type {fitzpatrick_scale!r} is not one of 1..6")
    low, high = ITA_RANGES[fitzpatrick_scale]
    ita = np.radians(rng.uniform(max(low, -60.0) + ITA_MARGIN, min(high, 74.0) - ITA_MARGIN))
    b_star = rng.uniform(11.0, 22.0)
    lightness = 50.0 + b_star * np.tan(ita)
    if not 24.0 <= lightness <= 80.0:  # keep L* plausible; b* follows from the drawn angle
        lightness = float(np.clip(lightness, 24.0, 80.0))
        b_star = (lightness - 50.0) / np.tan(ita)
    return float(lightness), float(rng.uniform(7.0, 15.0)), float(b_star)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly interpolated value noise: (size, size), values roughly in [-1, 1], `cells` blobs across."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, cells + 1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def skin_canvas(rng: np.random.Generator, fitzpatrick_scale: int, size: int) -> Canvas:
    """Plain skin: base colour, a lighting gradient, blotchy pigment, pores and fine grain, on a size x size grid."""
    lightness, a_star, b_star = skin_lab(rng, fitzpatrick_scale)
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    lab = np.empty((size, size, 3))
    angle, slope = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 2.5)
    lighting = slope * (np.cos(angle) * x + np.sin(angle) * y) - rng.uniform(0.0, 2.0) * (x**2 + y**2)
    blotch = smooth_noise(rng, size, int(rng.integers(3, 7)))
    lab[..., 0] = lightness + lighting - np.median(lighting) + 1.2 * blotch
    lab[..., 1] = a_star + 0.8 * smooth_noise(rng, size, int(rng.integers(3, 7)))
    lab[..., 2] = b_star + 0.8 * blotch
    pores = rng.random((size, size)) < rng.uniform(0.01, 0.04)
    lab[..., 0] -= pores * rng.uniform(1.0, 3.0) + rng.normal(0.0, 0.5, (size, size))
    tone = float(np.clip((np.degrees(np.arctan2(lightness - 50, b_star)) + 50.0) / 115.0, 0.0, 1.0))
    return Canvas(x, y, lab, tone)


def to_image(canvas: Canvas) -> Image.Image:
    """The canvas as an 8-bit sRGB image."""
    return Image.fromarray(np.round(lab_to_srgb(canvas.lab) * 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------------- shapes (soft masks)


def ellipse_radius(c: Canvas, cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> np.ndarray:
    """Normalised elliptical radius (H, W): 0 at the centre, 1 on the ellipse."""
    dx, dy = c.x - cx, c.y - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    return np.sqrt(u**2 + v**2)


def wobble(rng: np.random.Generator, c: Canvas, cx: float, cy: float, amount: float) -> np.ndarray:
    """An irregular-border factor (H, W) around 1: a sum of a few angular harmonics of amplitude `amount`."""
    phi = np.arctan2(c.y - cy, c.x - cx)
    harmonics = [rng.uniform(-1, 1) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) / k for k in range(2, 6)]
    return 1.0 + amount * np.sum(harmonics, axis=0)


def soft(r: np.ndarray, edge: float) -> np.ndarray:
    """Mask in [0, 1] from a normalised radius: 1 inside, 0 outside, a ramp of width `edge` at r = 1."""
    return np.clip((1.0 - r) / max(edge, 1e-3) + 0.5, 0.0, 1.0)


def dots_radius(c: Canvas, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """min over dots of distance / radius: (H, W). centres: (N, 2) as (x, y); radii: (N,)."""
    d = np.hypot(c.x[None] - centres[:, 0, None, None], c.y[None] - centres[:, 1, None, None])
    return (d / radii[:, None, None]).min(axis=0)


def curve_distance(c: Canvas, points: np.ndarray) -> np.ndarray:
    """Distance (H, W) from each pixel to the nearest of a densely sampled curve's points (M, 2)."""
    d = np.hypot(c.x[None] - points[:, 0, None, None], c.y[None] - points[:, 1, None, None])
    return d.min(axis=0)


def wandering_curve(rng: np.random.Generator, length: float, turn: float, n: int = 80) -> np.ndarray:
    """(n, 2) points of a smooth random walk of total `length`; `turn` sets how serpiginous it is."""
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turn * np.sin(np.linspace(0, rng.uniform(2, 5) * np.pi, n)))
    heading += np.cumsum(rng.normal(0.0, 0.15, n))
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * length / n
    points = np.cumsum(steps, axis=0)
    return points - points.mean(axis=0) + rng.uniform(-0.25, 0.25, 2)


def scatter(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """(n, 2) points around a random centre, normally spread by `spread`, kept inside the frame."""
    centre = rng.uniform(-0.3, 0.3, 2)
    return np.clip(centre + rng.normal(0.0, spread, (n, 2)), -0.92, 0.92)


# ------------------------------------------------------------------------------------- colour operations


def erythema(c: Canvas, alpha: np.ndarray, strength: float, violaceous: float = 0.5) -> None:
    """Redness, tone-dependent: bright red on light skin; duller, violaceous-brown, lower contrast on dark.

    alpha: (H, W) in [0, 1]; strength ~0..1; violaceous in [0, 1]: blue-purple (1) vs brown (0) cast on dark skin.
    """
    t = c.tone
    d_l = -4.0 * t - 5.0 * (1 - t)
    d_a = 18.0 * t + 5.0 * (1 - t)
    d_b = 2.0 * t + (1 - t) * (2.0 - 5.0 * violaceous)
    c.lab[...] += (strength * alpha)[..., None] * np.array([d_l, d_a, d_b])


def pigment(c: Canvas, alpha: np.ndarray, strength: float) -> None:
    """Brown hyperpigmentation (melanin): darker and yellower; smaller contrast on already dark skin."""
    t = c.tone
    c.lab[...] += (strength * alpha)[..., None] * np.array([-10.0 - 8.0 * t, 2.0 + 2.0 * t, 3.0 + 5.0 * t])


def paint(c: Canvas, alpha: np.ndarray, colour: tuple[float, float, float]) -> None:
    """Alpha-blend towards an absolute Lab colour (scale, pus, crust): the same colour on any skin."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    c.lab[:] = c.lab * (1 - a) + np.array(colour) * a


def shade(c: Canvas, alpha: np.ndarray, amount: float) -> None:
    """Lighten (amount > 0) or darken lightness only: highlights, raised rims, shadows."""
    c.lab[..., 0] += amount * alpha


def dome(c: Canvas, r: np.ndarray, cx: float, cy: float, rx: float, height: float) -> None:
    """A raised dome under light from the upper left: highlight off-centre, shadow on the far side."""
    inside = np.clip(1 - r, 0, 1)
    side = ((c.x - cx) * -0.7 + (c.y - cy) * -0.7) / max(rx, 1e-3)
    shade(c, inside * np.clip(side, -1, 1), 4.0 * height)


# ------------------------------------------------------------------------------------- study morphologies


def _nodule(rng, c: Canvas, radius: tuple[float, float]):
    """Centre, radii, angle and normalised radius of one irregular nodule."""
    cx, cy = rng.uniform(-0.35, 0.35, 2)
    rx = rng.uniform(*radius)
    ry, theta = rx * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    r = ellipse_radius(c, cx, cy, rx, ry, theta) / wobble(rng, c, cx, cy, rng.uniform(0.02, 0.12))
    return cx, cy, rx, r


def basal_cell_carcinoma(rng, c: Canvas) -> None:
    """Pearly, translucent nodule with a rolled border and fine telangiectatic vessels; sometimes ulcerated."""
    cx, cy, rx, r = _nodule(rng, c, (0.12, 0.3))
    body = soft(r, 0.15)
    erythema(c, body, rng.uniform(0.2, 0.5), rng.uniform(0, 1))
    paint(c, body * rng.uniform(0.25, 0.5), (min(c.lab[..., 0].mean() + 14, 88), 8.0, 6.0))
    shade(c, np.exp(-(((r - 0.85) / 0.12) ** 2)), rng.uniform(4, 9))  # rolled, shiny border
    dome(c, r, cx, cy, rx, rng.uniform(0.6, 1.2))
    for _ in range(rng.integers(2, 6)):
        vessel = wandering_curve(rng, rx * rng.uniform(0.8, 1.6), 0.25, 40) * 0.5 + (cx, cy)
        erythema(c, body * np.exp(-((curve_distance(c, vessel) / (0.6 * c.pixel + 0.006)) ** 2)), 1.2, 0.2)
    if rng.random() < 0.3:
        paint(c, soft(r / rng.uniform(0.2, 0.45), 0.3), (rng.uniform(30, 42), 18.0, 16.0))
    if rng.random() < 0.3:
        pigment(c, soft(dots_radius(c, scatter(rng, 6, rx / 3) * 0.3 + (cx, cy), np.full(6, 0.03)), 0.4), 0.8)


def folliculitis(rng, c: Canvas) -> None:
    """Many small follicular papules and pustules: red halos, some with yellow-white heads."""
    n = int(rng.integers(6, 30))
    centres = scatter(rng, n, rng.uniform(0.2, 0.5))
    radii = rng.uniform(0.025, 0.055, n) * rng.uniform(0.8, 1.4)
    erythema(c, soft(dots_radius(c, centres, radii * 1.8), 0.8), rng.uniform(0.5, 1.0), rng.uniform(0, 1))
    heads = rng.random(n) < rng.uniform(0.2, 0.9)
    if heads.any():
        pus = soft(dots_radius(c, centres[heads], radii[heads] * 0.6), 0.6)
        paint(c, pus * rng.uniform(0.6, 0.9), (rng.uniform(76, 86), 6.0, rng.uniform(22, 38)))
    dome(c, dots_radius(c, centres, radii), 0.0, 0.0, 1.0, 0.3)


def nematode_infection(rng, c: Canvas) -> None:
    """A serpiginous raised erythematous track (creeping eruption), sometimes with vesicles along it."""
    track = wandering_curve(rng, rng.uniform(0.9, 2.0), rng.uniform(0.2, 0.6))
    width = rng.uniform(0.025, 0.055)
    d = curve_distance(c, track)
    erythema(c, np.exp(-((d / width) ** 2)), rng.uniform(0.6, 1.1), rng.uniform(0, 1))
    shade(c, np.exp(-((d / (0.5 * width)) ** 2)), rng.uniform(1.5, 4.0))
    if rng.random() < 0.5:
        vesicles = track[rng.choice(len(track), int(rng.integers(2, 7)), replace=False)]
        paint(c, soft(dots_radius(c, vesicles, np.full(len(vesicles), width * 0.6)), 0.5) * 0.5, (80.0, 4.0, 14.0))


def neutrophilic_dermatoses(rng, c: Canvas) -> None:
    """An inflamed plaque with a dusky, violaceous edge; sometimes pustules on the edge or a necrotic centre."""
    cx, cy, rx, r = _nodule(rng, c, (0.22, 0.45))
    r = r / wobble(rng, c, cx, cy, 0.15)
    erythema(c, soft(r, 0.3), rng.uniform(0.6, 1.1), rng.uniform(0, 1))
    rim = np.exp(-(((r - 0.9) / 0.15) ** 2))
    c.lab[...] += (rim * rng.uniform(0.5, 1.0))[..., None] * np.array([-7.0, 3.0, -6.0])  # dusky violaceous border
    if rng.random() < 0.5:
        phi = rng.uniform(0, 2 * np.pi, 10)
        edge = np.stack([cx + 0.9 * rx * np.cos(phi), cy + 0.9 * rx * np.sin(phi)], axis=1)
        paint(c, soft(dots_radius(c, edge, np.full(10, 0.03)), 0.6) * 0.7, (82.0, 5.0, 30.0))
    if rng.random() < 0.35:
        paint(c, soft(r / rng.uniform(0.25, 0.5), 0.4) * 0.8, (rng.uniform(28, 40), 12.0, 10.0))


def prurigo_nodularis(rng, c: Canvas) -> None:
    """Several firm, hyperpigmented, dome-shaped nodules with excoriated (crusted) tops."""
    n = int(rng.integers(3, 10))
    centres = scatter(rng, n, rng.uniform(0.3, 0.55))
    radii = rng.uniform(0.04, 0.09, n)
    r = dots_radius(c, centres, radii)
    pigment(c, soft(r, 0.4), rng.uniform(0.4, 1.0))
    erythema(c, soft(r, 0.4), rng.uniform(0.1, 0.5), rng.uniform(0, 1))
    dome(c, r, 0.0, 0.0, 1.0, rng.uniform(0.5, 1.0))
    excoriated = rng.random(n) < rng.uniform(0.3, 1.0)
    if excoriated.any():
        crust = soft(dots_radius(c, centres[excoriated], radii[excoriated] * 0.35), 0.6)
        paint(c, crust * 0.85, (rng.uniform(26, 38), 22.0, 16.0))


def psoriasis(rng, c: Canvas) -> None:
    """One to four well-demarcated erythematous plaques with silvery-white scale (amount varies)."""
    scale_amount = rng.uniform(0.15, 0.9)
    for _ in range(rng.integers(1, 5)):
        cx, cy, _, r = _nodule(rng, c, (0.1, 0.32))
        plaque = soft(r, 0.05)
        erythema(c, plaque, rng.uniform(0.6, 1.0), rng.uniform(0, 1))
        flakes = np.clip(smooth_noise(rng, c.x.shape[0], int(rng.integers(8, 20))) + scale_amount, 0, 1)
        paint(c, plaque * flakes * scale_amount, (rng.uniform(82, 92), 1.0, rng.uniform(1, 6)))


def squamous_cell_carcinoma(rng, c: Canvas) -> None:
    """A keratotic or ulcerated nodule on an erythematous base, with crust."""
    cx, cy, rx, r = _nodule(rng, c, (0.12, 0.28))
    erythema(c, soft(r, 0.25), rng.uniform(0.4, 0.9), rng.uniform(0, 1))
    dome(c, r, cx, cy, rx, rng.uniform(0.4, 1.0))
    centre = soft(r / rng.uniform(0.35, 0.7), 0.3)
    rough = np.clip(0.6 + smooth_noise(rng, c.x.shape[0], int(rng.integers(10, 20))), 0, 1)
    if rng.random() < 0.55:  # keratin horn: rough yellow-white
        paint(c, centre * rough * 0.85, (rng.uniform(70, 82), 4.0, rng.uniform(14, 24)))
    else:  # ulcer with haemorrhagic crust
        paint(c, centre * 0.85, (rng.uniform(30, 42), rng.uniform(18, 28), rng.uniform(12, 20)))
    if rng.random() < 0.4:
        paint(c, centre * (1 - rough) * 0.6, (32.0, 20.0, 18.0))


MORPHOLOGIES: dict[str, Callable[[np.random.Generator, Canvas], None]] = dict(
    zip(
        CONDITIONS,
        (
            basal_cell_carcinoma,
            folliculitis,
            nematode_infection,
            neutrophilic_dermatoses,
            prurigo_nodularis,
            psoriasis,
            squamous_cell_carcinoma,
        ),
        strict=True,
    )
)


def render_image(md5hash: str, label: str, fitzpatrick_scale: int, size: int) -> Image.Image:
    """A procedural stand-in image (RGB, size x size) of condition `label` on skin of the given Fitzpatrick type.

    Deterministic: the same md5hash always gives the same pixels (the label and type select what is drawn, the
    hash seeds every random choice).
    """
    if label not in MORPHOLOGIES:
        raise M2MError(f"unknown condition {label!r}; expected one of {', '.join(CONDITIONS)}")
    rng = rng_of(md5hash)
    canvas = skin_canvas(rng, int(fitzpatrick_scale), size)
    if rng.random() < 0.4:  # an unrelated mole, scar, ... as real photos have
        generic_lesion(rng, canvas, str(rng.choice(GENERIC_LESIONS[1:])))
    skin = canvas.lab.copy()
    MORPHOLOGIES[label](rng, canvas)
    canvas.lab[...] = skin + rng.uniform(0.45, 1.0) * (canvas.lab - skin)  # mild to florid presentations
    canvas.lab[..., 0] += rng.normal(0.0, rng.uniform(0.0, 1.5), (size, size))  # sensor noise
    return to_image(canvas).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0) * size / 64))  # focus


# ------------------------------------------------------------------------------------- pretraining corpus


def generic_lesion(rng, c: Canvas, kind: str) -> None:
    """Draw one generic lesion `kind` (see GENERIC_LESIONS; "skin" draws nothing)."""
    if kind == "mole":
        n = int(rng.integers(1, 3))
        r = dots_radius(c, scatter(rng, n, 0.3), rng.uniform(0.03, 0.09, n))
        pigment(c, soft(r, 0.3), rng.uniform(1.0, 2.0))
    elif kind == "freckles":
        n = int(rng.integers(10, 40))
        pigment(c, soft(dots_radius(c, scatter(rng, n, 0.5), rng.uniform(0.012, 0.03, n)), 0.6), rng.uniform(0.3, 0.7))
    elif kind == "scar":
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        r = ellipse_radius(c, cx, cy, rng.uniform(0.2, 0.5), rng.uniform(0.02, 0.05), rng.uniform(0, np.pi))
        lighter_pinker = np.array([4.0 + 4.0 * (1 - c.tone), 4.0, -3.0])
        c.lab[...] += (soft(r, 0.4) * rng.uniform(0.5, 1.0))[..., None] * lighter_pinker
    elif kind == "bruise":
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        r = ellipse_radius(c, cx, cy, rng.uniform(0.15, 0.3), rng.uniform(0.12, 0.3), rng.uniform(0, np.pi))
        c.lab[...] += (soft(r, 0.8) * rng.uniform(0.5, 1.0))[..., None] * np.array([-8.0, 4.0, -10.0])
        c.lab[...] += np.exp(-(((r - 1.0) / 0.3) ** 2))[..., None] * np.array([0.0, -3.0, 6.0])  # yellow-green rim
    elif kind == "macule":
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        r = ellipse_radius(c, cx, cy, rng.uniform(0.08, 0.25), rng.uniform(0.06, 0.2), rng.uniform(0, np.pi))
        pigment(c, soft(r, 0.3), rng.uniform(-0.6, 0.8))  # hypo- or hyperpigmented


def render_pretraining_image(index: int, fitzpatrick_scale: int, size: int, lesion: str) -> Image.Image:
    """Pretraining-corpus image `index`: stand-in skin of the given type with one generic `lesion`."""
    if lesion not in GENERIC_LESIONS:
        raise M2MError(f"unknown generic lesion {lesion!r}; expected one of {', '.join(GENERIC_LESIONS)}")
    rng = rng_of(f"pretrain-{index}")
    canvas = skin_canvas(rng, int(fitzpatrick_scale), size)
    generic_lesion(rng, canvas, lesion)
    return to_image(canvas)
