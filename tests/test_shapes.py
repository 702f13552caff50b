"""The procedural shapes benchmark: schema, determinism, independence of factors, rendering, granularity."""

from __future__ import annotations

import math

import datasets
import numpy as np
import pytest

from diti_hf.data.shapes import (
    SHAPES_DATASET_NAME,
    ShapeFactor,
    attribute_loss_time,
    default_factors,
    factor_granularity,
    factors_from_json,
    factors_to_json,
    generate_shapes,
    render_shapes,
    sample_factor_codes,
)


def _single(kind_values: dict, factors=None, resolution: int = 32) -> np.ndarray:
    """Renders one image with the given class index per factor name (others 0); float in [0, 1]."""
    factors = factors or default_factors()
    codes = np.array([[kind_values.get(f.name, 0) for f in factors]])
    return render_shapes(codes, factors, resolution)[0].astype(np.float64) / 255.0


def test_dataset_schema_and_labels():
    ds = generate_shapes(40, seed=3)
    assert SHAPES_DATASET_NAME == "diti-shapes"
    names = [f.name for f in default_factors()]
    assert ds.column_names == ["image", *names]
    assert len(ds) == 40
    for f in default_factors():
        feature = ds.features[f.name]
        assert isinstance(feature, datasets.ClassLabel)
        assert feature.names == list(f.class_names)
    assert ds.features["shape"].names == ["circle", "square", "triangle"]
    image = ds[0]["image"]
    assert image.mode == "RGB" and image.size == (32, 32)
    # the dataset carries its factor specs
    assert [f.name for f in factors_from_json(ds.info.description)] == names
    # labels are the codes drawn from the seed
    codes = sample_factor_codes(40, 3)
    assert np.array_equal(np.stack([ds[n] for n in names], 1), codes)


def test_deterministic_and_prefix_stable():
    a, b = generate_shapes(16, seed=7), generate_shapes(16, seed=7)
    c = generate_shapes(16, seed=8)
    big = generate_shapes(32, seed=7)
    arr = lambda ds: np.stack([np.asarray(im) for im in ds["image"]])  # noqa: E731
    assert np.array_equal(arr(a), arr(b))
    assert not np.array_equal(arr(a), arr(c))
    assert np.array_equal(arr(big)[:16], arr(a))
    assert np.array_equal(np.asarray(big["shape"][:16]), np.asarray(a["shape"]))


def test_factors_uniform_and_pairwise_independent():
    factors = default_factors()
    codes = sample_factor_codes(40000, seed=0, factors=factors)
    n = len(codes)
    for j, f in enumerate(factors):
        freq = np.bincount(codes[:, j], minlength=f.num_classes) / n
        assert np.abs(freq - 1 / f.num_classes).max() < 0.012
    for i in range(len(factors)):
        for j in range(i + 1, len(factors)):
            joint = np.zeros((factors[i].num_classes, factors[j].num_classes))
            np.add.at(joint, (codes[:, i], codes[:, j]), 1)
            joint /= n
            product = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
            assert np.abs(joint - product).max() < 0.006
            # every combination occurs: no factor is a function of another
            assert joint.min() > 0


def test_render_known_pixels():
    factors = default_factors()
    by_name = {f.name: f for f in factors}
    # navy background, red plain circle, medium, centre
    img = _single({"background": 0, "object_color": 0, "scale": 1, "position_x": 1, "position_y": 1, "texture": 0})
    np.testing.assert_allclose(img[0, 0], by_name["background"].values[0], atol=1 / 255)
    np.testing.assert_allclose(img[16, 16], by_name["object_color"].values[0], atol=1 / 255)
    # object centroid at the centre; area ≈ π r² with r = 0.17 · 32
    mask = np.abs(img - np.array(by_name["background"].values[0])).sum(-1) > 0.05
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() + 0.5 - 16) < 0.3 and abs(ys.mean() + 0.5 - 16) < 0.3
    bg, fg = img[0, 0], img[16, 16]  # the rendered (uint8-rounded) colours
    coverage = ((img - bg) / (fg - bg)).mean(-1)  # anti-aliased edges count fractionally
    assert coverage.sum() == pytest.approx(math.pi * (0.17 * 32) ** 2, rel=0.01)
    # right / bottom positions move the centroid to 0.72 · 32
    right = _single({"position_x": 2, "position_y": 2})
    ys, xs = np.nonzero(np.abs(right - np.array(by_name["background"].values[0])).sum(-1) > 0.05)
    assert abs(xs.mean() + 0.5 - 0.72 * 32) < 0.6 and abs(ys.mean() + 0.5 - 0.72 * 32) < 0.6
    # stripes: ±20 % brightness of the object colour in horizontal bands of 2 px
    striped = _single({"object_color": 3, "scale": 2, "position_x": 1, "position_y": 1, "texture": 1})
    colour = np.array(by_name["object_color"].values[3])
    np.testing.assert_allclose(striped[14, 16], colour * 1.2, atol=1 / 255)
    np.testing.assert_allclose(striped[16, 16], colour * 0.8, atol=1 / 255)
    np.testing.assert_allclose(striped[16, 14], striped[16, 16], atol=1 / 255)  # horizontal bands
    checker = _single({"object_color": 3, "scale": 2, "position_x": 1, "position_y": 1, "texture": 2})
    np.testing.assert_allclose(checker[16, 14], colour * 0.8, atol=1 / 255)
    np.testing.assert_allclose(checker[16, 16], colour * 1.2, atol=1 / 255)


def test_shapes_differ_and_scale_orders_area():
    bg = np.array(default_factors()[0].values[0])
    areas = [(np.abs(_single({"scale": s}) - bg).sum(-1) > 0.05).sum() for s in range(3)]
    assert areas[0] < areas[1] < areas[2]
    imgs = [_single({"shape": s, "scale": 2}) for s in range(3)]
    assert all(np.abs(imgs[i] - imgs[j]).sum() > 5 for i in range(3) for j in range(i + 1, 3))


def test_variant_factors_and_64px():
    factors = [
        ShapeFactor("bg", "background", [(0.0, 0.0, 0.0), (0.5, 0.5, 0.5)], ["black", "grey"]),
        ShapeFactor("form", "shape", ["circle", "square", "triangle", "diamond"]),
        ShapeFactor("corner_mark", "mark", ["none", "top_left", "bottom_right"], amplitude=0.1),
    ]
    ds = generate_shapes(12, seed=1, resolution=64, factors=factors)
    assert ds.column_names == ["image", "bg", "form", "corner_mark"]
    assert ds[0]["image"].size == (64, 64)
    assert ds.features["form"].names == ["circle", "square", "triangle", "diamond"]
    # the mark is a 4×4 (64 / 16) square at brightness 1 - amplitude
    img = _single({"bg": 0, "corner_mark": 1}, factors, 64)
    np.testing.assert_allclose(img[1:5, 1:5], 0.9, atol=1 / 255)
    assert img[0, 0].max() == 0.0 and img[5, 5].max() == 0.0


def test_granularity_spans_scales_and_is_linear_in_contrast():
    g = factor_granularity(num_pairs=128, seed=0)
    assert set(g) == {f.name for f in default_factors()}
    # fine → coarse: texture < shape < scale < object colour < background
    assert g["texture"] < g["shape"] < g["scale"] < g["object_color"] < g["background"]
    assert g["texture"] > 1.0  # visible
    # changing only the background from grey 0.2 to 0.4 vs to 0.6: twice the pixel change
    base = [ShapeFactor("shape", "shape", ["circle", "square"])]
    near = factor_granularity([ShapeFactor("bg", "background", [(0.2,) * 3, (0.4,) * 3]), *base], num_pairs=32)["bg"]
    far = factor_granularity([ShapeFactor("bg", "background", [(0.2,) * 3, (0.6,) * 3]), *base], num_pairs=32)["bg"]
    assert far == pytest.approx(2 * near, rel=0.02)
    # known answer: every background pixel changes by 0.2 in 3 channels; the object covers ≈ π (0.17·32)² px
    uncovered = 32 * 32 - math.pi * (0.17 * 32) ** 2
    assert near == pytest.approx(0.2 * math.sqrt(3 * uncovered), rel=0.03)


def test_attribute_loss_time():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    for distance in (1.0, 5.0, 10.0):
        t = attribute_loss_time(distance)
        # Bayes error Φ(-√(ᾱ/(1-ᾱ)) · d) reaches 0.4 exactly at t: Φ(-m) >= 0.4 ⇔ m <= 0.253347
        margin = lambda s, d=distance: math.sqrt(alpha_bar[s] / (1 - alpha_bar[s])) * d  # noqa: E731
        assert margin(t) <= 0.253348 < margin(t - 1)
    assert attribute_loss_time(2.0) < attribute_loss_time(8.0)
    assert attribute_loss_time(0.0) == 0


def test_factor_spec_json_round_trip():
    factors = default_factors()
    again = factors_from_json(factors_to_json(factors))
    assert [f.to_dict() for f in again] == [f.to_dict() for f in factors]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "x", "kind": "size", "values": [1, 2]}, "kind"),
        ({"name": "image", "kind": "shape", "values": ["circle", "square"]}, "name"),
        ({"name": "x", "kind": "shape", "values": ["circle"]}, ">= 2"),
        ({"name": "x", "kind": "shape", "values": ["circle", "star"]}, "star"),
        ({"name": "x", "kind": "background", "values": [(0, 0, 0), (2, 0, 0)]}, "RGB"),
        ({"name": "x", "kind": "scale", "values": [0.1, 1.5]}, r"\(0, 1\)"),
        ({"name": "x", "kind": "shape", "values": ["circle", "square"], "class_names": ["a"]}, "class_names"),
    ],
)
def test_factor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapeFactor(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="distinct names"):
        generate_shapes(2, factors=[default_factors()[1], default_factors()[1]])
    with pytest.raises(ValueError, match="distinct kinds"):
        generate_shapes(2, factors=[ShapeFactor("a", "shape", ["circle", "square"]), default_factors()[1]])
    with pytest.raises(ValueError, match="resolution"):
        generate_shapes(2, resolution=8)
    with pytest.raises(ValueError, match="num_images"):
        generate_shapes(-1)
    with pytest.raises(ValueError, match=r"codes\[:, 1\]"):
        render_shapes(np.array([[0, 5, 0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="not a diti-shapes"):
        factors_from_json("{}")


def test_timescale_factors_render_a_faint_spot_and_a_lighting_ramp():
    from diti_hf.data.loading import load_image_dataset
    from diti_hf.data.shapes import SHAPES_DATASETS, timescale_factors

    factors = timescale_factors()
    assert [f.name for f in factors] == [f.name for f in default_factors()] + ["spot", "lighting"]
    base = {"background": 0, "scale": 0, "position_x": 1, "position_y": 1, "lighting": 0}
    for lighting in (0, 1):  # the corner is darkened by the left light and brightened by the right one
        plain = _single({**base, "lighting": lighting}, factors)
        diff = _single({**base, "lighting": lighting, "spot": 1}, factors) - plain
        # the spot: 2×2 px at rows/cols 29–30 of a 32-px image, a contrast of 0.15, nothing else changes
        np.testing.assert_allclose(np.abs(diff[29:31, 29:31]), 0.15, atol=1.5 / 255)
        diff[29:31, 29:31] = 0
        assert np.abs(diff).max() == 0
    # where brighter would clip (a near-white corner), the spot is darker by the same amount
    light = [
        ShapeFactor("bg", "background", [(0.95, 0.95, 0.95), (0.1, 0.1, 0.1)]),
        ShapeFactor("spot", "spot", ["none", "bottom_right"], amplitude=0.15),
    ]
    dark = _single({"bg": 0, "spot": 1}, light) - _single({"bg": 0}, light)
    np.testing.assert_allclose(dark[29:31, 29:31], -0.15, atol=1.5 / 255)
    # the lighting: a ramp of ±0.25 from left (class 0) to right (class 1) over the background
    left, right = _single(base, factors), _single({**base, "lighting": 1}, factors)
    bg = np.array(factors[0].values[0])
    ramp = ((np.arange(32) + 0.5) / 32 * 2 - 1) * 0.25
    np.testing.assert_allclose(right[0, :, :], np.clip(bg + ramp[:, None], 0, 1), atol=1 / 255)
    np.testing.assert_allclose(left[0, :, :], np.clip(bg - ramp[:, None], 0, 1), atol=1 / 255)
    # the named dataset generates the nine factors in memory
    assert set(SHAPES_DATASETS) == {"diti-shapes", "diti-shapes-v2"}
    ds = load_image_dataset("diti-shapes-v2", num_images=6, seed=2, resolution=16)
    assert ds.column_names == ["image", *[f.name for f in factors]] and ds[0]["image"].size == (16, 16)
    assert factors_from_json(ds.info.description)[-1].kind == "lighting"
    with pytest.raises(ValueError, match="LIGHTING|lighting"):
        ShapeFactor("l", "lighting", ["left", "diagonal"])
