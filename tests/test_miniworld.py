"""The mini world (procedural stand-in images, not dermatology data) and the ITA skin-tone measure."""

import time

import numpy as np
import pytest

from m2m.data.ita import ITA_RANGES, fst_of_ita, ita_of_image, ita_of_lab, lab_to_srgb, srgb_to_lab
from m2m.data.miniworld import (
    CONDITIONS,
    GENERIC_LESIONS,
    erythema,
    render_image,
    render_pretraining_image,
    rng_of,
    skin_canvas,
    to_image,
)
from m2m.errors import M2MError

MD5 = "0123456789abcdef0123456789abcdef"


def lab_image(lightness, a_star, b_star, size=8):
    """A flat (size, size, 3) uint8 image of one CIELAB colour."""
    return np.round(lab_to_srgb(np.tile([lightness, a_star, b_star], (size, size, 1))) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------- ITA


def test_lab_of_known_colours():
    np.testing.assert_allclose(srgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.01)
    rgb = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)


@pytest.mark.parametrize(("lab", "ita"), [((70, 10, 20), 45.0), ((50, 12, 18), 0.0), ((30, 10, 20), -45.0)])
def test_ita_of_known_colours(lab, ita):
    assert ita_of_lab(lab[0], lab[2]) == pytest.approx(ita)
    assert ita_of_image(lab_image(*lab)) == pytest.approx(ita, abs=0.5)  # after 8-bit rounding


def test_ita_uses_only_masked_pixels():
    image = np.concatenate([lab_image(70, 10, 20), lab_image(30, 10, 20)], axis=0)  # top light, bottom dark
    mask = np.zeros(image.shape[:2], bool)
    mask[8:] = True
    assert ita_of_image(image, mask) == pytest.approx(-45.0, abs=0.5)
    with pytest.raises(M2MError):
        ita_of_image(image, np.zeros_like(mask))


@pytest.mark.parametrize(("ita", "fst"), [(70, 1), (55.5, 1), (55, 2), (41.5, 2), (30, 3), (20, 4), (0, 5), (-29, 5),
                                          (-31, 6), (-80, 6)])
def test_fst_of_ita(ita, fst):
    assert fst_of_ita(ita) == fst


# ----------------------------------------------------------------------------------------------------- renderer


def test_render_is_deterministic_per_md5():
    first = np.asarray(render_image(MD5, "psoriasis", 2, 64))
    again = np.asarray(render_image(MD5, "psoriasis", 2, 64))
    other = np.asarray(render_image(MD5[::-1], "psoriasis", 2, 64))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 1.0


@pytest.mark.parametrize("fst", range(1, 7))
def test_background_skin_ita_lies_in_the_type_range(fst):
    low, high = ITA_RANGES[fst]
    itas = [ita_of_image(to_image(skin_canvas(rng_of(f"{fst}-{i}"), fst, 32))) for i in range(60)]
    assert low < min(itas) and max(itas) < high
    lesion_itas = [ita_of_image(render_image(f"{i:032x}", CONDITIONS[i % 7], fst, 32)) for i in range(70)]
    assert np.mean([fst_of_ita(v) == fst for v in lesion_itas]) >= 0.85  # lesions take part of the frame


def test_every_condition_renders_its_own_lesion():
    skin = np.asarray(to_image(skin_canvas(rng_of(MD5), 2, 64)), dtype=float)
    images = {label: np.asarray(render_image(MD5, label, 2, 64), dtype=float) for label in CONDITIONS}
    for label, image in images.items():
        assert np.abs(image - skin).max() > 20, f"{label}: no visible lesion"
    for i, a in enumerate(CONDITIONS):
        for b in CONDITIONS[i + 1 :]:
            assert np.abs(images[a] - images[b]).mean() > 0.5, f"{a} and {b} render alike"


def test_bad_label_or_type_is_an_error():
    with pytest.raises(M2MError, match="unknown condition"):
        render_image(MD5, "melanoma", 2, 64)
    with pytest.raises(M2MError, match="Fitzpatrick type"):
        render_image(MD5, "psoriasis", 7, 64)
    with pytest.raises(M2MError, match="generic lesion"):
        render_pretraining_image(0, 2, 64, "psoriasis")


def red_contrast(fst: int) -> float:
    """Mean a* (redness) rise of full-strength erythema over skin of type `fst` (ten renders)."""
    rises = []
    for i in range(10):
        canvas = skin_canvas(rng_of(f"red-{fst}-{i}"), fst, 16)
        before = srgb_to_lab(np.asarray(to_image(canvas)) / 255.0)[..., 1].mean()
        erythema(canvas, np.ones((16, 16)), 1.0)
        rises.append(srgb_to_lab(np.asarray(to_image(canvas)) / 255.0)[..., 1].mean() - before)
    return float(np.mean(rises))


def test_erythema_is_less_red_on_dark_skin():
    assert red_contrast(6) < 0.5 * red_contrast(1)
    assert red_contrast(5) < red_contrast(2)


def test_pretraining_images_are_deterministic_and_tone_ordered():
    first = np.asarray(render_pretraining_image(3, 1, 32, "mole"))
    np.testing.assert_array_equal(first, np.asarray(render_pretraining_image(3, 1, 32, "mole")))
    for lesion in GENERIC_LESIONS:
        light = ita_of_image(render_pretraining_image(5, 1, 32, lesion))
        dark = ita_of_image(render_pretraining_image(5, 6, 32, lesion))
        assert light > 41 and dark < -20


def test_renders_the_subset_in_seconds():
    start = time.perf_counter()
    for i in range(300):
        render_image(f"{i:032x}", CONDITIONS[i % 7], 1 + i % 6, 64)
    assert (time.perf_counter() - start) / 300 < 0.02  # 1,631 images in well under 30 s
