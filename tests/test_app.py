"""The browser app (`diti_hf.app`, `diti-hf app`): its input checks, the Space folder and its upload, and the real page
driven in headless Chromium (Debian's `chromium` and `chromedriver` through selenium; nothing is downloaded).

The browser test checks pixels: every image the page shows, read back from the browser through a canvas, equals the
output of the pipeline's own method for the same inputs. Screenshots go to `outputs/app_test/` (or
`DITI_APP_SCREENSHOTS`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub.constants
import numpy as np
import PIL.Image
import pytest
import tomllib
import torch
import yaml
from huggingface_hub import SpaceCard

from conftest import tiny_pipeline
from diti_hf import DiTiPipeline, TimestepPartition
from diti_hf.app import (
    AIM,
    FIELDS,
    MAX_IMAGE_PIXELS,
    SHIPPED_FINDINGS,
    UNMEASURED,
    UPLOAD_MAX_AGE_S,
    UPLOAD_SWEEP_EVERY_S,
    AppInputError,
    DiTiApp,
    build_app,
    check_range,
    check_seed,
    check_steps,
    check_top_k,
    describe_range,
    find_alignment_image,
    interpolation_alphas,
    launch_app,
    page_header,
    parse_scales,
    partition_figure,
    preset_ranges,
    read_direction,
    read_image,
)
from diti_hf.app.space import check_space_folder, push_space_to_hub
from diti_hf.cli import main
from diti_hf.data.shapes import generate_shapes
from test_hub import TOKEN, HubStandIn

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces" / "diti-shapes32"
SHIPPED = REPO / "pretrained" / "diti-shapes32"
SCREENSHOTS = Path(os.environ.get("DITI_APP_SCREENSHOTS", REPO / "outputs" / "app_test"))
STEPS = 2


@pytest.fixture(scope="module")
def pipe() -> DiTiPipeline:
    return tiny_pipeline()


def random_png(path: Path, seed: int, size: tuple[int, int] = (24, 20), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- input checks
def test_read_image_keeps_the_pixels_and_notes_transparency(pipe, tmp_path):
    path = random_png(tmp_path / "a.png", 0)
    image, note = read_image(path, "image A")
    assert note is None and image.mode == "RGB" and image.size == (24, 20)
    assert np.array_equal(np.asarray(image), np.asarray(PIL.Image.open(path)))
    rgba, note = read_image(random_png(tmp_path / "t.png", 1, mode="RGBA"), "image B")
    assert rgba.mode == "RGBA"
    assert note == "image B ('t.png') has transparency (mode RGBA): transparent pixels are composited on white."


def test_read_image_refuses_what_the_model_cannot_take(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    frames = [PIL.Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    PIL.Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    PIL.Image.new("L", (side, side)).save(tmp_path / "huge.png")  # compresses to a few kB; refused from its header
    random_png(tmp_path / "whole.png", 2, size=(64, 64))
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:300])
    expected = {
        "notes.txt": "image A ('notes.txt') could not be decoded: not an image file that PIL can read (UnidentifiedImageError); "
        "expected a PNG, JPEG, WebP, BMP or TIFF image.",
        "anim.gif": "image A ('anim.gif') is animated (3 frames); expected a still image (save one frame).",
        "deep.png": "image A ('deep.png') has mode 'I;16'; expected an 8-bit image",
        "huge.png": f"image A ('huge.png') is {side}×{side} pixels ({side * side / 1e6:.1f} megapixels); expected at "
        "most 16.8 megapixels (e.g. 4096×4096).",
        "cut.png": "image A ('cut.png') could not be decoded (OSError",
        "missing.png": "image A ('missing.png'): no such file; upload the image again.",
    }
    for name, message in expected.items():
        with pytest.raises(AppInputError) as info:
            read_image(tmp_path / name, "image A")
        assert str(info.value).startswith(message), (name, str(info.value))


def test_read_direction_wants_latent_dim_finite_numbers(tmp_path):
    w = np.arange(1, 17, dtype=np.float64)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "row.npy", w[None])
    assert torch.equal(read_direction(tmp_path / "w.npy", 16), torch.arange(1, 17, dtype=torch.float32))
    assert torch.equal(read_direction(tmp_path / "row.npy", 16), torch.arange(1, 17, dtype=torch.float32))
    np.save(tmp_path / "short.npy", w[:10])
    np.save(tmp_path / "nan.npy", np.full(16, np.nan))
    np.save(tmp_path / "zero.npy", np.zeros(16))
    np.save(tmp_path / "text.npy", np.array(["a"] * 16))
    (tmp_path / "bad.npy").write_text("not numpy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 16, dtype=object), allow_pickle=True)
    np.save(tmp_path / "long.npy", np.ones(17))
    # a header claiming 10**12 float64 (8 TB) over 16 bytes of data: refused from the header, nothing allocated
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)
    header["shape"] = (-16,)
    with open(tmp_path / "negative.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    header["shape"] = (16,)
    with open(tmp_path / "cut.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 100)
    expected = "expected a .npy file of 16 numbers, one per dim of z (np.save('w.npy', w))."
    cases = {
        "short.npy": f"the direction file 'short.npy': has shape (10,); {expected}",
        "nan.npy": f"the direction file 'nan.npy': contains NaN or infinite values; {expected}",
        "zero.npy": "the direction file 'zero.npy': is all zeros; a direction must be non-zero.",
        "text.npy": f"the direction file 'text.npy': holds <U1 values; {expected}",
        "bad.npy": f"the direction file 'bad.npy': not a .npy array (no .npy header); {expected}",
        "objects.npy": f"the direction file 'objects.npy': holds Python objects (a pickle); refused; {expected}",
        "long.npy": "the direction file 'long.npy': its header claims 17 values (shape (17,)), more than the 16 "
        f"allowed; refused before reading; {expected}",
        "huge.npy": "the direction file 'huge.npy': its header claims 1000000000000 values (shape (1000000000000,)), "
        f"more than the 16 allowed; refused before reading; {expected}",
        "negative.npy": f"the direction file 'negative.npy': its header claims a negative shape (-16,); {expected}",
        "cut.npy": f"the direction file 'cut.npy': its header claims 128 bytes of data, the file holds 100; {expected}",
        "gone.npy": "the direction file 'gone.npy': no such file (uploads are deleted after a while); upload it again.",
    }
    for name, message in cases.items():
        with pytest.raises(AppInputError) as info:
            read_direction(tmp_path / name, 16)
        assert str(info.value) == message and "\n" not in message


def test_ranges_scales_and_alphas():
    partition = TimestepPartition(latent_dim=16, num_chunks=4)
    assert check_range(partition, 500.0, 1000.0) == (500, 1000)
    rule = "0 <= lo < hi <= T = 1000 (half-open, inside [0, 1000))"
    for lo, hi in ((0, 1001), (-1, 10), (600, 500), (5, 5)):
        with pytest.raises(AppInputError, match=r"the range \[.*\) is outside the model's time-steps"):
            check_range(partition, lo, hi)
    with pytest.raises(AppInputError) as info:
        check_range(partition, None, 2.5)
    assert (
        str(info.value)
        == f"the range needs two whole numbers, got lo = None, hi = 2.5; a time-step range [lo, hi) must satisfy {rule}."
    )
    assert parse_scales("-1, −0.5 0 ,1") == [-1.0, -0.5, 0.0, 1.0]
    assert parse_scales("-100 100") == [-100.0, 100.0]
    # ±1e308 is finite but overflows z: refused up front, naming the field
    for bad in ("", "a, b", "1, inf", "nan", ",".join(["1"] * 10), "1e308", "-1e308", "0, 100.5"):
        with pytest.raises(AppInputError) as info:
            parse_scales(bad)
        assert str(info.value) == (
            "Scales s: expected 1 to 9 numbers in [-100, 100], e.g. -1, -0.5, 0, 0.5, 1; got " + repr(bad) + "."
        )
    assert interpolation_alphas(5, 0.3) == [0.0, 0.25, 0.5, 0.75, 1.0, 0.3]
    with pytest.raises(AppInputError, match=r"^α \(0 = A, 1 = B's range\): expected a number in \[0, 1\], got 1.5"):
        interpolation_alphas(3, 1.5)
    for num in (1, 10, 2.5):
        with pytest.raises(AppInputError, match=r"^Images in the strip: expected a whole number in \[2, 9\]"):
            interpolation_alphas(num, 0.5)


def test_partition_picker_shows_chunks_dims_and_stages():
    staged = TimestepPartition(latent_dim=16, num_chunks=4, stages=[500, 1000], dims_per_stage=[4, 12])
    presets = preset_ranges(staged)
    assert list(presets) == [
        "late chunks: t ∈ [750, 1000)",
        "early chunks: t ∈ [0, 250)",
        "everything: t ∈ [0, 1000)",
        "stage 0: t ∈ [0, 500)",
        "stage 1: t ∈ [500, 1000)",
        "chunk 0: t ∈ [0, 250)",
        "chunk 1: t ∈ [250, 500)",
        "chunk 2: t ∈ [500, 750)",
        "chunk 3: t ∈ [750, 1000)",
    ]
    assert describe_range(staged, 400, 800).startswith(
        "t ∈ [400, 800) meets **chunks 1–3** of 4 → **dims [2, 16)** of z (14 of 16). An edit acts on whole "
        "chunks: t ∈ [250, 1000)."
    )
    assert describe_range(staged, 500, 1000).startswith(
        "t ∈ [500, 1000) meets **chunks 2–3** of 4 → **dims [4, 16)** of z (12 of 16). The figure"
    )
    figure = np.asarray(partition_figure(staged, 500, 1000))
    assert figure.shape == (150, 720, 3)
    orange = (figure == (249, 115, 22)).all(-1)
    # the axes are 640 px from x = 40. Time row: chunks 2-3 = t in [500, 1000), the right half (past the stage edge
    # drawn at t = 500); dims row: their dims [4, 16) of 16.
    assert orange[30, 362:680].all() and not orange[30, :359].any() and not orange[30, 680:].any()
    assert orange[100, 200:680].all() and not orange[100, :200].any() and not orange[100, 680:].any()
    stage_edge = (figure[:, 360] == (15, 23, 42)).all(-1)  # the thick line at t = 500
    assert stage_edge[20:56].all()
    assert not (np.asarray(partition_figure(staged)) == (249, 115, 22)).all(-1).any()


def test_find_alignment_image(tmp_path):
    assert find_alignment_image(tmp_path, None) is None
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "alignment_diti.png").write_bytes(b"png")
    assert find_alignment_image(None, tmp_path) == tmp_path / "evaluation" / "alignment_diti.png"
    (tmp_path / "alignment_heatmap.png").write_bytes(b"png")
    assert find_alignment_image(tmp_path) == tmp_path / "alignment_heatmap.png"
    assert find_alignment_image(REPO / "benchmarks" / "shapes32") == REPO / "benchmarks/shapes32/alignment_diti.png"


def test_app_actions_are_the_pipeline_calls(pipe, tmp_path):
    """What the page shows for each action is the pipeline method's output for the same inputs."""
    app = DiTiApp(pipe, probe_images=64, batch_size=4)
    a, _ = read_image(random_png(tmp_path / "a.png", 0), "image A")
    b, _ = read_image(random_png(tmp_path / "b.png", 1, size=(16, 16)), "image B")

    def same(shown, expected):
        assert len(shown) == len(expected)
        for got, want in zip(shown, expected):
            assert np.array_equal(np.asarray(got), np.asarray(want))

    swapped = app.swap(a, b, 250, 1000, STEPS)
    assert [c for _, c in swapped] == ["A with B's t ∈ [250, 1000)", "B with A's t ∈ [250, 1000)"]
    kw = {"num_inference_steps": STEPS, "batch_size": 4}
    same([im for im, _ in swapped], pipe.swap(source=[a, b], target=[b, a], timesteps=[(250, 1000)], **kw).images)
    strip, single = app.interpolate(a, b, 0, 500, 3, 0.25, STEPS)
    expected = pipe.interpolate([a], [b], alphas=[0, 0.5, 1, 0.25], timesteps=(0, 500), **kw).images
    same([im for im, _ in strip] + [single], expected)
    assert [c for _, c in strip] == ["α = 0.00", "α = 0.50", "α = 1.00"]
    same([im for im, _ in app.reconstruct(a, b, STEPS)], pipe.reconstruct([a, b], **kw).images)

    # the probe direction is the demo's logistic probe on the same data
    from diti_hf.data.shapes import generate_shapes
    from diti_hf.evaluation.probes import fit_direction_probe as train_logistic_probe

    assert app.factors["shape"] == ["circle", "square", "triangle"]
    w, std, summary = app.probe_direction("shape", "square", seed=3)
    data = generate_shapes(64, seed=3, resolution=16)
    z = pipe.encode(pipe.preprocess(data["image"])).z
    expected_probe = train_logistic_probe(z, torch.tensor(data["shape"]) == 1, seed=3)
    assert torch.equal(w, expected_probe["weight"]) and torch.equal(std, expected_probe["std"])
    positive = int((torch.tensor(data["shape"]) == 1).sum())
    assert summary.startswith(
        f"probe “shape = square” on 64 images of diti-shapes ({positive} positive): test accuracy"
    )
    edited = app.edit(a, b, w, [-1.0, 1.0], STEPS, z_std=std, top_k=4)
    assert [c for _, c in edited] == ["A, s = -1", "A, s = 1", "B, s = -1", "B, s = 1"]
    same([im for im, _ in edited], pipe.edit([a, b], direction=w, scales=[-1, 1], z_std=std, top_k=4, **kw).images)
    for call, message in (
        (lambda: app.swap(a, b, 0, 2000, STEPS), "outside the model's time-steps"),
        (lambda: app.swap(a, b, 0, 10, 0), r"^DDIM steps: expected a whole number in \[1, 1000\], got 0"),
        (lambda: app.edit(a, b, w, [1.0], STEPS, top_k=17), r"^Top-k dims \(empty = all\): expected empty"),
        (lambda: app.edit(a, b, w, [1e308], STEPS), r"^Scales s: expected 1 to 9 numbers in \[-100, 100\]"),
        (lambda: app.probe_direction("shape", "hexagon", 0), "^Class: 'hexagon' is not a class of 'shape'"),
        (
            lambda: app.probe_direction("shape", "square", 2**70),
            r"^Seed: expected a whole number in \[0, 4294967295\]",
        ),
        (lambda: app.draw_shapes(-1), r"^Seed: expected a whole number in \[0, 4294967295\], got -1"),
    ):
        with pytest.raises(AppInputError, match=message):
            call()


def page_handler(page, elem_id: str):
    """The function the page runs for the event of the component `elem_id` (a button or a file slot)."""
    for function in page.fns.values():
        if any(getattr(page.blocks[block_id], "elem_id", None) == elem_id for block_id, _ in function.targets):
            return function.fn
    raise KeyError(elem_id)


def test_field_checks_name_the_fields_by_their_labels():
    huge = 2**70
    assert check_seed(None) == 0 and check_seed(7.0) == 7 and check_seed(2**32 - 1) == 2**32 - 1
    for value, shown in ((huge, str(huge)), (-1, "-1"), (2.5, "2.5"), (float("inf"), "inf"), (10**400, None)):
        with pytest.raises(AppInputError) as info:
            check_seed(value)
        assert str(info.value).startswith("Seed: expected a whole number in [0, 4294967295], got ")
        assert shown is None or str(info.value).endswith(f"got {shown}.")
    assert check_top_k(None, 64) is None and check_top_k(1, 64) == 1 and check_top_k(64.0, 64) == 64
    for value in (0, 65, -3, 2.5, float("nan")):
        with pytest.raises(AppInputError) as info:
            check_top_k(value, 64)
        assert str(info.value) == (
            f"Top-k dims (empty = all): expected empty (all dims) or a whole number in [1, 64], got {value!r}."
        )
    for value in (0, 1001, 10**400, float("nan"), None):
        with pytest.raises(AppInputError, match=r"^DDIM steps: expected a whole number in \[1, 1000\]"):
            check_steps(value)
    for lo in (10**400, 1e308):  # no OverflowError, and the message stays one short line
        with pytest.raises(AppInputError, match="is outside the model's time-steps") as info:
            check_range(TimestepPartition(latent_dim=16, num_chunks=4), lo, 5)
        assert len(str(info.value)) < 200


def test_the_page_answers_bad_fields_naming_them(pipe):
    """Through the page's own handlers: each message names the field by the label the page shows."""
    page = build_app(DiTiApp(pipe, probe_images=64))
    labels = {block.elem_id: getattr(block, "label", None) for block in page.blocks.values()}
    for elem_id, field in (("seed", "seed"), ("steps", "steps"), ("scales", "scales"), ("top-k", "top_k")):
        assert labels[elem_id] == FIELDS[field]
    a, b = generate_shapes(2, seed=0, resolution=16)["image"]
    *cleared, status = page_handler(page, "draw-shapes")(2**70)
    assert cleared == [None] * 6
    assert status == f'<span class="error">⚠ Seed: expected a whole number in [0, 4294967295], got {2**70}.</span>'
    edit = page_handler(page, "edit-button")
    fields = {"source": "probe", "factor": "shape", "class": "circle", "file": None, "scales": "-1, 1", "top_k": None}
    for change, message in (
        ({"top_k": 0}, "Top-k dims (empty = all): expected empty (all dims) or a whole number in [1, 16], got 0."),
        ({"scales": "1e308, -1e308"}, "Scales s: expected 1 to 9 numbers in [-100, 100], e.g. -1, -0.5, 0, 0.5, 1; "),
        ({"seed": 2**70}, "Seed: expected a whole number in [0, 4294967295]"),
    ):
        values = {**fields, "steps": STEPS, "seed": 0, **change}
        out, status = edit(a, b, *values.values())
        assert out is None and status.startswith(f'<span class="error">⚠ {message}'), status


def test_header_states_the_aim_and_what_the_model_measured(pipe):
    shipped = DiTiApp(pipe, probe_dataset=None, findings=SHIPPED_FINDINGS)
    other = DiTiApp(pipe, probe_dataset=None)
    for app, measured in ((shipped, SHIPPED_FINDINGS), (other, UNMEASURED)):
        header = page_header(app, "cpu")
        assert header.endswith(f"{AIM} {measured}")
        # the coarse/fine split is DiTi's aim, not a fact of every model
        assert "hold coarse" not in header.lower() and "aims to" in header
    assert "not yet" in SHIPPED_FINDINGS and "[0, 250)" in SHIPPED_FINDINGS
    page = build_app(shipped)
    shown = next(block.value for block in page.blocks.values() if getattr(block, "elem_id", None) == "header")
    assert shown == page_header(shipped, str(pipe.device))


def test_uploads_are_deleted_after_a_fixed_age_and_when_the_server_stops(pipe):
    import httpx

    assert build_app(DiTiApp(pipe, probe_dataset=None)).delete_cache == (UPLOAD_SWEEP_EVERY_S, UPLOAD_MAX_AGE_S)
    assert UPLOAD_MAX_AGE_S <= 24 * 3600
    # the same mechanism on a short schedule: an upload is kept while young, then swept while the server runs
    page = build_app(DiTiApp(pipe, probe_dataset=None), delete_cache=(1, 2))
    port = free_port()
    launch_app(page, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        upload = f"http://127.0.0.1:{port}/gradio_api/upload"
        swept = Path(httpx.post(upload, files={"files": ("w.npy", b"x" * 64)}).json()[0])
        assert swept.is_file() and str(swept) in page.upload_file_set
        start = time.perf_counter()
        while swept.exists() and time.perf_counter() - start < 30:
            time.sleep(0.2)
        assert not swept.exists()
        kept = Path(httpx.post(upload, files={"files": ("v.npy", b"y" * 64)}).json()[0])
        assert kept.is_file()
    finally:
        page.close()
    assert not kept.exists()  # every upload goes when the server stops


# ---------------------------------------------------------------------------------------------------- the Space
def test_space_card_is_a_valid_space_card():
    card = check_space_folder(SPACE)
    readme = (SPACE / "README.md").read_text()
    metadata = yaml.safe_load(readme.split("---\n")[1])
    assert SpaceCard(readme).data.to_dict() == card.data.to_dict()
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and (SPACE / "app.py").is_file()
    assert metadata["models"] == ["diti-hf/diti-shapes32"]
    # the Hub's constraints on the card: a colour pair from its list, a short description of at most 60 characters
    colours = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert metadata["colorFrom"] in colours and metadata["colorTo"] in colours
    assert 0 < len(metadata["short_description"]) <= 60 and metadata["title"] and metadata["emoji"]
    # the gradio the Space runs is the one this package's extra installs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    import gradio

    assert metadata["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0] == "6"
    assert any(dep.startswith("gradio>=6") for dep in pyproject["project"]["optional-dependencies"]["app"])
    assert PIL.Image.open(SPACE / "alignment_heatmap.png").size[0] > 100


def test_space_requirements_are_the_package_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = [line.strip() for line in (SPACE / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == pyproject["project"]["dependencies"]


def test_space_app_builds_the_page_for_a_model(pipe, tmp_path, monkeypatch):
    import gradio

    pipe.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("DITI_MODEL", str(tmp_path / "model"))
    scope = runpy.run_path(str(SPACE / "app.py"), run_name="space_app")  # not __main__: builds, does not serve
    assert isinstance(scope["page"], gradio.Blocks)
    assert scope["app"].alignment_image == SPACE / "alignment_heatmap.png"
    assert scope["app"].partition == pipe.partition and scope["device"] in ("cpu", "cuda")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


class SpaceHubStandIn(HubStandIn):
    """The Hub stand-in of `test_hub.py`, also answering the Space routes (`/api/spaces/...`) like model ones."""

    def __init__(self):
        super().__init__()
        self.created: list[dict] = []
        self.space_paths: list[str] = []

    def _handle(self, handler, method):
        if urlsplit(handler.path).path.startswith("/api/spaces/"):
            self.space_paths.append(handler.path)
            handler.path = handler.path.replace("/api/spaces/", "/api/models/", 1)
        return super()._handle(handler, method)

    def _create_repo(self, handler, payload):
        self.created.append(payload)
        return super()._create_repo(handler, payload)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # even when the suite runs offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with SpaceHubStandIn() as stand_in:
        yield stand_in


def test_push_space_to_hub_uploads_the_folder_the_package_and_the_model(pipe, hub, tmp_path):
    pipe.save_pretrained(tmp_path / "model", safe_serialization=True)
    url = push_space_to_hub(SPACE, "test-org/diti-space", model_dir=tmp_path / "model", token=TOKEN, endpoint=hub.url)
    assert hub.unexpected == []
    assert url.startswith(f"{hub.url}/test-org/diti-space/commit/")
    assert [(p["name"], p["organization"], p["type"], p["sdk"]) for p in hub.created] == [
        ("diti-space", "test-org", "space", "gradio")
    ]
    assert hub.space_paths and all("/test-org/diti-space/" in p for p in hub.space_paths)
    files = hub.files("test-org/diti-space")
    for name in ("README.md", "app.py", "requirements.txt", "alignment_heatmap.png"):
        assert files[name] == (SPACE / name).read_bytes(), name
    import diti_hf

    package = Path(diti_hf.__file__).parent
    for name in ("__init__.py", "app/page.py", "model_card_template.md", "pipelines/pipeline_diti.py"):
        assert files[f"diti_hf/{name}"] == (package / name).read_bytes(), name
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in files)
    for path in sorted((tmp_path / "model").rglob("*")):
        if path.is_file():
            assert files[f"model/{path.relative_to(tmp_path / 'model').as_posix()}"] == path.read_bytes()
    # the uploaded tree is a Space that loads its bundled model
    space = tmp_path / "space"
    for name, content in files.items():
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        (space / name).write_bytes(content)
    check_space_folder(space)
    assert DiTiPipeline.from_pretrained(space / "model").partition == pipe.partition


def test_push_space_to_hub_refuses_before_any_request(pipe, hub, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"lacks \['README.md', 'app.py', 'requirements.txt'\]"):
        push_space_to_hub(tmp_path / "empty", "test-org/x", token=TOKEN, endpoint=hub.url)
    shutil.copytree(SPACE, tmp_path / "space")
    (tmp_path / "space" / "README.md").write_text("# no front matter\n")
    with pytest.raises(ValueError, match="the front matter must set `sdk`"):
        push_space_to_hub(tmp_path / "space", "test-org/x", token=TOKEN, endpoint=hub.url)
    with pytest.raises(ValueError, match="repo_id"):
        push_space_to_hub(SPACE, "a/b/c", token=TOKEN, endpoint=hub.url)
    with pytest.raises(ValueError, match="model_index.json"):
        push_space_to_hub(SPACE, "test-org/x", model_dir=tmp_path / "empty", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------------- the command
def test_cli_app_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    for argv, message in (
        (["app", "--model", str(tmp_path / "none")], "no such folder"),
        (["app", "--report", str(tmp_path / "none")], "--report"),
        (["app", "--port", "0"], "must be a positive integer"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("diti-hf: error:") and message in err, err


# ---------------------------------------------------------------------------------------------------- the browser
def find_browser() -> tuple[str, str] | None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/lib/chromium-browser/chromedriver") if Path(p).is_file()),
        None,
    )
    return (browser, driver) if browser and driver else None


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname in ("127.0.0.1", "localhost", "::1")


@pytest.fixture(scope="module")
def chrome():
    found = find_browser()
    if found is None:
        pytest.skip(
            "no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver; make test does)"
        )
    pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium must use the system browser and driver, never fetch its own
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1700",
        "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
        # no name resolves but the loopback: the page must work without internet
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def outbound():
    """Every address this process connects to while the module runs (the app server included)."""
    seen: list = []
    original = socket.socket.connect

    def connect(self, address):
        seen.append(address)
        return original(self, address)

    socket.socket.connect = connect
    yield seen
    socket.socket.connect = original


@pytest.fixture(scope="module")
def served(pipe, outbound):
    from diti_hf.app import build_app, launch_app

    app = DiTiApp(pipe, model_name="tiny test pipeline", probe_images=64)
    page = build_app(app, steps=20)
    port = free_port()
    launch_app(page, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield app, f"http://127.0.0.1:{port}/"
    page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Reads every <img> under a selector back from the browser: decoded by the browser, drawn at its natural size.
READ_IMAGES = """
return [...document.querySelectorAll(arguments[0])].map(img => {
  if (!img.complete || !img.naturalWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  return {w: canvas.width, h: canvas.height, data: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
});
"""


class Page:
    """The app page in the browser, by the element ids `build_app` sets."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.by = driver, By
        self.wait = WebDriverWait(driver, 60, poll_frequency=0.1)
        driver.get(url)
        self.wait.until(lambda d: d.find_elements(By.ID, "swap-button"))

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def status(self) -> str:
        return self.find("#status").text

    def wait_status(self, text: str) -> str:
        self.wait.until(lambda _: text in self.status())
        return self.status()

    def upload(self, slot: str, path: Path) -> None:
        self.find(f"#{slot} input[type=file]").send_keys(str(path))

    def type_number(self, css: str, value) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.find(css)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)

    def images(self, css: str, count: int) -> list[np.ndarray]:
        def loaded(_):
            got = self.driver.execute_script(READ_IMAGES, css)
            return got if len(got) == count and all(got) else False

        return [np.array(g["data"], np.uint8).reshape(g["h"], g["w"], 4) for g in self.wait.until(loaded)]

    def click_tab(self, name: str) -> None:
        tab = next(b for b in self.driver.find_elements(self.by.CSS_SELECTOR, "button[role=tab]") if b.text == name)
        tab.click()

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / name))
        return SCREENSHOTS / name

    def body(self) -> str:
        return self.find("body").text


def assert_shown(got: list[np.ndarray], expected: list[PIL.Image.Image]) -> None:
    assert len(got) == len(expected)
    for shown, image in zip(got, expected):
        assert (shown[..., 3] == 255).all()
        assert np.array_equal(shown[..., :3], np.asarray(image.convert("RGB")))


def test_browser_swap_and_interpolation_show_the_pipeline_outputs(pipe, chrome, served, outbound, tmp_path):
    app, url = served
    a_path, b_path = random_png(tmp_path / "a.png", 0), random_png(tmp_path / "b.png", 1, size=(16, 16))
    (tmp_path / "notes.txt").write_text("not an image")
    page = Page(chrome, url)
    assert page.status() == "Ready." and "tiny test pipeline" in page.body()
    page.screenshot("1_loaded.png")

    # a bad upload is answered in the status line, with no traceback and no gradio error toast
    page.upload("file-a", tmp_path / "notes.txt")
    message = page.wait_status("notes.txt")
    assert message == (
        "⚠ image A ('notes.txt') could not be decoded: not an image file that PIL can read (UnidentifiedImageError); "
        "expected a PNG, JPEG, WebP, BMP or TIFF image."
    )
    assert "Traceback" not in page.body() and not chrome.find_elements(page.by.CSS_SELECTOR, ".toast-body")
    page.screenshot("2_bad_upload.png")
    page.find("#file-a button[aria-label=Clear]").click()
    page.wait_status("Image A cleared.")

    page.upload("file-a", a_path)
    assert page.wait_status("Image A: a.png") == ("Image A: a.png, 24×20 RGB, shown as the model sees it (16×16).")
    page.upload("file-b", b_path)
    page.wait_status("Image B: b.png")
    a, b = PIL.Image.open(a_path), PIL.Image.open(b_path)
    assert_shown(page.images("#preview-a img", 1), [pipe.postprocess(pipe.preprocess([a]), "pil")[0]])

    page.type_number("#steps input[type=number]", STEPS)
    page.type_number("#range-lo input", 500)
    page.type_number("#range-hi input", 1000)
    page.wait.until(lambda _: "chunks 2–3" in page.find("#range-text").text)
    assert page.find("#range-text").text.startswith("t ∈ [500, 1000) meets chunks 2–3 of 4 → dims [8, 16) of z")

    page.find("#swap-button").click()
    assert page.wait_status("Swapped") == "Swapped the chunks of t ∈ [500, 1000) between A and B (2 steps)."
    expected = pipe.swap(
        source=[a, b], target=[b, a], timesteps=[(500, 1000)], num_inference_steps=STEPS, batch_size=app.batch_size
    ).images
    assert_shown(page.images("#swap-out img", 2), expected)
    page.screenshot("3_swap.png")

    page.click_tab("Interpolate")
    page.find("#interpolate-button").click()
    assert page.wait_status("Interpolated") == "Interpolated t ∈ [500, 1000) from A to B (2 steps)."
    alphas = interpolation_alphas(5, 0.5)
    expected = pipe.interpolate(
        [a], [b], alphas=alphas, timesteps=(500, 1000), num_inference_steps=STEPS, batch_size=app.batch_size
    ).images
    assert_shown(page.images("#strip-out img", 5), expected[:5])
    assert_shown(page.images("#alpha-out img", 1), expected[5:])
    page.screenshot("4_interpolation.png")

    # a range outside [0, T) is answered too, in the picker and when an action runs
    page.type_number("#range-hi input", 5000)
    page.wait.until(lambda _: "outside the model's time-steps" in page.find("#range-text").text)
    page.find("#interpolate-button").click()
    assert page.wait_status("outside").startswith("⚠ the range [500, 5000) is outside the model's time-steps")
    assert "Traceback" not in page.body()

    # the page and the server reached nothing but this machine
    requests = [
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in chrome.get_log("performance")
        if json.loads(entry["message"])["message"]["method"] == "Network.requestWillBeSent"
    ]
    assert any(r.startswith(url) for r in requests)
    assert [r for r in requests if not is_local(r)] == []
    remote = [a for a in outbound if isinstance(a, tuple) and not ipaddress.ip_address(a[0]).is_loopback]
    assert remote == []


# ---------------------------------------------------------------------------------------------------- shipped model
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("DITI_SLOW") != "1", reason="starts `diti-hf app` on the shipped model; DITI_SLOW=1"
)
def test_browser_on_the_shipped_model_through_the_cli(chrome, tmp_path):
    """`diti-hf app` on pretrained/diti-shapes32: the start-up time, a 20-step swap of two drawn shapes (timed from
    the click to the images on the page), the images equal to `pipe.swap`; screenshots for the README."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diti_hf.cli", "app", "--port", str(port), "--threads", "1", "--no-progress"]
    start = time.perf_counter()
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            assert time.perf_counter() - start < 120
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        startup = time.perf_counter() - start
        page = Page(chrome, url)
        assert "pretrained/diti-shapes32" in page.body()
        page.find("#draw-shapes").click()
        page.wait_status("Drew two shapes (seed 0)")
        page.find("#swap-button").click()
        clicked = time.perf_counter()
        page.wait_status("Swapped")
        shown = page.images("#swap-out img", 2)
        swap_seconds = time.perf_counter() - clicked
        page.screenshot("5_shipped_swap.png")
        print(
            f"\nditi-hf app start-up {startup:.1f} s; 20-step swap of one pair {swap_seconds:.1f} s (click to images)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    from diti_hf.data.shapes import generate_shapes

    torch.set_num_threads(1)
    pipe = DiTiPipeline.from_pretrained(SHIPPED)
    pipe.set_progress_bar_config(disable=True)
    a, b = generate_shapes(2, seed=0, resolution=32)["image"]
    first = next(iter(preset_ranges(pipe.partition).values()))  # the range the page starts with
    expected = pipe.swap(source=[a, b], target=[b, a], timesteps=[first], num_inference_steps=20, batch_size=16)
    assert_shown(shown, expected.images)
    assert startup < 60 and swap_seconds < 30
