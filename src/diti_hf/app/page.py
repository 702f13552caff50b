"""The Gradio page around a [`DiTiApp`]: [`build_app`] assembles it from one function per part (the two images, the
time-step range, the Swap, Interpolate, Edit and Reconstruct tabs, the alignment heatmap) and [`launch_app`] serves
it offline.

gradio is the optional extra `diti_hf[app]`: it is imported when a page is built or served, not with this module.
"""

from __future__ import annotations

import functools
import html
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image

from ..commands._common import DEFAULT_APP_STEPS
from ..partition import TimestepPartition
from .actions import DiTiApp
from .figures import describe_range, page_header, partition_figure, partition_summary, preset_ranges
from .inputs import (
    FIELDS,
    MAX_STRIP,
    MAX_UPLOAD_BYTES,
    AppInputError,
    check_range,
    check_seed,
    check_steps,
    check_top_k,
    parse_scales,
    read_direction,
    read_image,
)

logger = logging.getLogger(__name__)

# Set before gradio is imported: it reads them at import and at `Blocks()`; the page must not call home.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SHARE": "False",
}
# Gradio keeps every upload and every image it serves as a file; sweep them this often, deleting those this old.
UPLOAD_SWEEP_EVERY_S = 10 * 60
UPLOAD_MAX_AGE_S = 60 * 60
# The page's initial DDIM steps: a UI choice for quick interactive edits on a CPU, below the pipeline API's
# `diti_hf.sampling.DEFAULT_NUM_INFERENCE_STEPS`; `diti-hf app --steps` starts from it too.
DEFAULT_STEPS = DEFAULT_APP_STEPS

# Model images are 32×32 or 64×64: shown enlarged without smoothing, so that the pixels on screen are the model's.
CSS = """
.pixelated img { image-rendering: pixelated; }
.upscaled img { width: 100%; height: 100%; object-fit: contain; }
#status { min-height: 2.5em; }
#status .error { color: #b91c1c; }
"""
_IMAGE_KWARGS = {
    "format": "png",
    "interactive": False,
    "elem_classes": ["pixelated", "upscaled"],
    "height": 168,
    "buttons": [],
}
_GALLERY_KWARGS = {
    "format": "png",
    "elem_classes": ["pixelated"],
    "object_fit": "contain",
    "fit_columns": False,  # small tiles, not two images stretched over the page
    "buttons": ["download"],
}
# The events that call the model share one queue slot: the pipeline runs one call at a time.
_MODEL_EVENTS = {"concurrency_id": "pipeline", "concurrency_limit": 1}


def _import_gradio() -> Any:
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ[key] = value
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"the browser app needs gradio: pip install 'diti_hf[app]' ({error})") from error
    return gradio


def _error(error: BaseException | str) -> str:
    # messages quote file names the user chose: escaped, never markup
    return f'<span class="error">⚠ {html.escape(str(error))}</span>'


def _status_for(fn: Callable[..., Any], n_outputs: int) -> Callable[..., Any]:
    # every handler answers bad input in the status line; the outputs are cleared. `wraps` keeps `fn`'s
    # signature visible to gradio, which passes a live progress tracker where `fn` declares `gr.Progress`.
    @functools.wraps(fn)
    def handler(*args: Any) -> Any:
        try:
            return fn(*args)
        except (AppInputError, ValueError, TypeError) as error:
            return (*([None] * n_outputs), _error(error))
        except Exception as error:  # a bug: one line in the page, the traceback in the server log
            logger.exception("unexpected error in the DiTi app")
            return (*([None] * n_outputs), _error(f"unexpected {type(error).__name__}: {error}"))

    return handler


def _need_images(a: Any, b: Any) -> None:
    if a is None or b is None:
        missing = [name for name, im in (("A", a), ("B", b)) if im is None]
        which = "images A and B are" if len(missing) == 2 else f"image {missing[0]} is"
        raise AppInputError(f"{which} missing: upload two images or draw two shapes first.")


def _progress_note(progress: Any, what: str, steps: Any) -> None:
    progress(0.0, desc=f"{what}: DDIM inversion and generation, {steps} steps each")


@dataclass
class _Images:
    """The image row: the images A and B (states, upload slots, previews), the seed, shapes-draw and steps fields."""

    state_a: Any
    state_b: Any
    file_a: Any
    file_b: Any
    preview_a: Any
    preview_b: Any
    seed: Any
    draw: Any
    steps: Any


@dataclass
class _Shared:
    """What the tabs read and write besides their own fields: the model side, the image row, the range, the status."""

    app: DiTiApp
    images: _Images
    lo: Any
    hi: Any
    status: Any


def build_app(
    app: DiTiApp | Any,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    device_label: str | None = None,
    delete_cache: tuple[int, int] | None = (UPLOAD_SWEEP_EVERY_S, UPLOAD_MAX_AGE_S),
) -> Any:
    r"""
    Builds the Gradio page around a [`DiTiApp`] (or a pipeline, wrapped with the defaults).

    Args:
        app ([`DiTiApp`] or [`DiTiPipeline`]): The model side.
        steps (`int`, defaults to [`DEFAULT_STEPS`]): Initial DDIM step count.
        seed (`int`, defaults to 0): Initial seed (shapes draw, probe data and training).
        device_label (`str`, *optional*): Shown in the header (default: the pipeline's device).
        delete_cache (`tuple[int, int]`, *optional*, defaults to `(UPLOAD_SWEEP_EVERY_S, UPLOAD_MAX_AGE_S)`): Every
            `delete_cache[0]` seconds, delete the page's temporary files (uploads, served images) older than
            `delete_cache[1]` seconds; all of them are deleted when the server stops. `None` keeps them.

    Returns:
        `gradio.Blocks`: Serve it with [`launch_app`].
    """
    gr = _import_gradio()
    if not isinstance(app, DiTiApp):
        app = DiTiApp(app)
    device = device_label or str(app.pipe.device)
    with gr.Blocks(title=f"DiTi · {app.model_name}", analytics_enabled=False, delete_cache=delete_cache) as page:
        gr.Markdown(page_header(app, device), elem_id="header")
        images = _image_row(gr, steps, seed)
        lo_box, hi_box = _range_picker(gr, app.partition)
        shared = _Shared(app, images, lo_box, hi_box, status=gr.Markdown("Ready.", elem_id="status"))
        _image_events(shared)
        with gr.Tabs():
            _swap_tab(gr, shared)
            _interpolate_tab(gr, shared)
            _edit_tab(gr, shared)
            _reconstruct_tab(gr, shared)
        if app.alignment_image is not None:
            with gr.Accordion("Time-step alignment of this model (from its evaluation report)", open=False):
                gr.Image(PIL.Image.open(app.alignment_image).convert("RGB"), format="png", interactive=False,
                         show_label=False, elem_id="alignment")  # fmt: skip
    return page


def _image_row(gr: Any, steps: int, seed: int) -> _Images:
    """The row of images A and B (an upload slot and the image as the model sees it) and the shared fields."""
    state_a, state_b = gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column():
            file_a = gr.File(label="Image A (upload)", type="filepath", elem_id="file-a", height=120)
            preview_a = gr.Image(label="A as the model sees it", elem_id="preview-a", **_IMAGE_KWARGS)
        with gr.Column():
            file_b = gr.File(label="Image B (upload)", type="filepath", elem_id="file-b", height=120)
            preview_b = gr.Image(label="B as the model sees it", elem_id="preview-b", **_IMAGE_KWARGS)
        with gr.Column():
            seed_box = gr.Number(value=seed, precision=0, label=FIELDS["seed"], elem_id="seed",
                                 info="of the shapes draw and of the probe's data and training")  # fmt: skip
            draw_button = gr.Button("Draw two from the built-in shapes dataset", elem_id="draw-shapes")
            steps_box = gr.Slider(1, 100, value=steps, step=1, label=FIELDS["steps"], elem_id="steps",
                                  info="of the inversion and of the generation")  # fmt: skip
    return _Images(state_a, state_b, file_a, file_b, preview_a, preview_b, seed_box, draw_button, steps_box)


def _image_events(shared: _Shared) -> None:
    """Uploading, clearing and drawing images A and B: each sets its image and preview, and says so in the status."""
    app, images, status = shared.app, shared.images, shared.status
    res = app.resolution

    def load(label: str) -> Callable[..., Any]:
        def fn(path: str | None):
            if path is None:
                return None, None, f"Image {label} cleared."
            image, note = read_image(path, f"image {label}")
            message = f"Image {label}: {Path(path).name}, {image.width}×{image.height} {image.mode}, shown as the "
            message += f"model sees it ({res}×{res})." + (f" {note}" if note else "")
            return image, app.shown(image), html.escape(message)

        return _status_for(fn, 2)

    def draw(seed_value: Any):
        seed_value = check_seed(seed_value)
        drawn, labels = app.draw_shapes(seed_value)
        message = f"Drew two shapes (seed {seed_value}): A = {labels[0]}; B = {labels[1]}."
        return drawn[0], drawn[1], app.shown(drawn[0]), app.shown(drawn[1]), None, None, message

    slot_a = [images.state_a, images.preview_a, status]
    slot_b = [images.state_b, images.preview_b, status]
    images.file_a.upload(load("A"), images.file_a, slot_a, queue=False)
    images.file_b.upload(load("B"), images.file_b, slot_b, queue=False)
    images.file_a.clear(lambda: (None, None, "Image A cleared."), None, slot_a, queue=False)
    images.file_b.clear(lambda: (None, None, "Image B cleared."), None, slot_b, queue=False)
    images.draw.click(
        _status_for(draw, 6),
        images.seed,
        [images.state_a, images.state_b, images.preview_a, images.preview_b, images.file_a, images.file_b, status],
    )


def _range_picker(gr: Any, partition: TimestepPartition) -> tuple[Any, Any]:
    """The time-step range (a preset, lo and hi), drawn on the partition and described; returns the lo and hi fields."""
    presets = preset_ranges(partition)
    first_label, (first_lo, first_hi) = next(iter(presets.items()))

    def pick(label: str):
        lo, hi = presets[label]
        return lo, hi

    def show_range(lo: Any, hi: Any):
        try:
            lo, hi = check_range(partition, lo, hi)
        except AppInputError as error:
            return partition_figure(partition), _error(error)
        return partition_figure(partition, lo, hi), describe_range(partition, lo, hi)

    with gr.Accordion("Time-step range and the partition of z", open=True):
        with gr.Row():
            preset = gr.Dropdown(list(presets), value=first_label, label="Preset (sets lo and hi)", elem_id="preset")
            lo_box = gr.Number(value=first_lo, precision=0, label=FIELDS["lo"], elem_id="range-lo")
            hi_box = gr.Number(value=first_hi, precision=0, label=FIELDS["hi"], elem_id="range-hi")
        figure = gr.Image(
            value=partition_figure(partition, first_lo, first_hi), show_label=False, elem_id="partition-figure",
            format="png", interactive=False, height=150, buttons=[],
        )  # fmt: skip
        range_text = gr.Markdown(describe_range(partition, first_lo, first_hi), elem_id="range-text")
        with gr.Accordion("Partition table", open=False):
            gr.Markdown(partition_summary(partition))
    preset.change(pick, preset, [lo_box, hi_box], queue=False)
    for box in (lo_box, hi_box):
        box.change(show_range, [lo_box, hi_box], [figure, range_text], queue=False)
    return lo_box, hi_box


def _swap_tab(gr: Any, shared: _Shared) -> None:
    """The Swap tab: A with B's chunks of the range and B with A's ([`DiTiApp.swap`])."""
    app, images = shared.app, shared.images

    def run_swap(a, b, lo, hi, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        _need_images(a, b)
        _progress_note(progress, "swapping", steps_value)
        out = app.swap(a, b, lo, hi, steps_value)
        return out, f"Swapped the chunks of t ∈ [{int(lo)}, {int(hi)}) between A and B ({int(steps_value)} steps)."

    with gr.Tab("Swap", id="swap"):
        swap_button = gr.Button("Swap the range between A and B", variant="primary", elem_id="swap-button")
        swap_out = gr.Gallery(label="swapped", columns=6, height=210, elem_id="swap-out", **_GALLERY_KWARGS)
    swap_button.click(
        _status_for(run_swap, 1),
        [images.state_a, images.state_b, shared.lo, shared.hi, images.steps],
        [swap_out, shared.status],
        **_MODEL_EVENTS,
    )


def _interpolate_tab(gr: Any, shared: _Shared) -> None:
    """The Interpolate tab: the strip from A to B over the range, and the image at one α ([`DiTiApp.interpolate`])."""
    app, images = shared.app, shared.images

    def run_interpolate(a, b, lo, hi, num, alpha, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        _need_images(a, b)
        _progress_note(progress, "interpolating", steps_value)
        strip, single = app.interpolate(a, b, lo, hi, num, alpha, steps_value)
        return strip, single, f"Interpolated t ∈ [{int(lo)}, {int(hi)}) from A to B ({int(steps_value)} steps)."

    with gr.Tab("Interpolate", id="interpolate"):
        with gr.Row():
            num_box = gr.Slider(2, MAX_STRIP, value=5, step=1, label=FIELDS["strip"], elem_id="strip-size")
            alpha_box = gr.Slider(0, 1, value=0.5, step=0.05, label=FIELDS["alpha"], elem_id="alpha")
        interpolate_button = gr.Button("Interpolate the range from A to B", variant="primary",
                                       elem_id="interpolate-button")  # fmt: skip
        strip_out = gr.Gallery(label="strip", columns=9, height=170, elem_id="strip-out", **_GALLERY_KWARGS)
        alpha_out = gr.Image(label="at α", elem_id="alpha-out", **_IMAGE_KWARGS)
    interpolate_button.click(
        _status_for(run_interpolate, 2),
        [images.state_a, images.state_b, shared.lo, shared.hi, num_box, alpha_box, images.steps],
        [strip_out, alpha_out, shared.status],
        **_MODEL_EVENTS,
    )


def _edit_tab(gr: Any, shared: _Shared) -> None:
    """The Edit tab: A and B moved along a direction, from a probe trained on the spot or a `.npy` file
    ([`DiTiApp.edit`])."""
    app, images, partition = shared.app, shared.images, shared.app.partition

    def run_edit(
        a, b, source, factor, class_name, direction_file, scales_text, top_k, steps_value, seed_value,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):  # fmt: skip
        _need_images(a, b)
        # every field is checked before the probe trains or the file is read
        scales = parse_scales(scales_text)
        top_k = check_top_k(top_k, partition.latent_dim)
        steps_value = check_steps(steps_value, partition.num_train_timesteps)
        seed_value = check_seed(seed_value)
        if source == "probe":
            progress(0.0, desc="training the probe")
            direction, z_std, summary = app.probe_direction(factor, class_name, seed_value)
        else:
            if direction_file is None:
                raise AppInputError(
                    f"{FIELDS['direction']}: no file; upload a .npy of {partition.latent_dim} numbers, or use a probe."
                )
            direction, z_std = read_direction(direction_file, partition.latent_dim), None
            summary = f"direction from {Path(direction_file).name}"
        _progress_note(progress, "editing", steps_value)
        out = app.edit(a, b, direction, scales, steps_value, z_std=z_std, top_k=top_k)
        return out, f"Edited A and B along the {summary} ({int(steps_value)} steps)."

    def classes_of(factor: str):
        names = app.factors.get(factor, [])
        return gr.update(choices=names, value=names[0] if names else None)

    with gr.Tab("Edit", id="edit"):
        factor_names = list(app.factors)
        first_classes = app.factors.get(factor_names[0], []) if factor_names else []
        with gr.Row():
            source = gr.Radio(["probe", "file"], value="probe" if factor_names else "file", label="Direction",
                              elem_id="direction-source",
                              info=f"a probe trained now on {app.probe_dataset}, or an uploaded .npy")  # fmt: skip
            factor = gr.Dropdown(factor_names, value=factor_names[0] if factor_names else None,
                                 label=FIELDS["factor"], elem_id="factor")  # fmt: skip
            class_name = gr.Dropdown(first_classes, value=first_classes[0] if first_classes else None,
                                     label=FIELDS["class"], elem_id="class")  # fmt: skip
            direction_file = gr.File(label=f"{FIELDS['direction']} (.npy, {partition.latent_dim} numbers)",
                                     type="filepath", elem_id="direction-file", height=100)  # fmt: skip
        with gr.Row():
            scales_box = gr.Textbox("-1, -0.5, 0, 0.5, 1", label=FIELDS["scales"], elem_id="scales")
            top_k_box = gr.Number(value=None, precision=0, label=FIELDS["top_k"], elem_id="top-k")
        if app.probe_error:
            gr.Markdown(_error(app.probe_error))
        edit_button = gr.Button("Edit A and B", variant="primary", elem_id="edit-button")
        edit_out = gr.Gallery(label="edited", columns=5, height=400, elem_id="edit-out", **_GALLERY_KWARGS)
    factor.change(classes_of, factor, class_name, queue=False)
    fields = [source, factor, class_name, direction_file, scales_box, top_k_box, images.steps, images.seed]
    edit_button.click(
        _status_for(run_edit, 1),
        [images.state_a, images.state_b, *fields],
        [edit_out, shared.status],
        **_MODEL_EVENTS,
    )


def _reconstruct_tab(gr: Any, shared: _Shared) -> None:
    """The Reconstruct tab: A and B inverted and generated again ([`DiTiApp.reconstruct`])."""
    app, images = shared.app, shared.images

    def run_reconstruct(a, b, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        _need_images(a, b)
        _progress_note(progress, "reconstructing A and B", steps_value)
        return app.reconstruct(a, b, steps_value), "Reconstructed A and B."

    with gr.Tab("Reconstruct", id="reconstruct"):
        reconstruct_button = gr.Button("Reconstruct A and B", variant="primary", elem_id="reconstruct-button")
        reconstruct_out = gr.Gallery(label="reconstructed", columns=6, height=210, elem_id="reconstruct-out",
                                     **_GALLERY_KWARGS)  # fmt: skip
    reconstruct_button.click(
        _status_for(run_reconstruct, 1),
        [images.state_a, images.state_b, images.steps],
        [reconstruct_out, shared.status],
        **_MODEL_EVENTS,
    )


def launch_app(
    page: Any,
    host: str | None = None,
    port: int | None = None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str]:
    r"""
    Serves a page of [`build_app`] offline: no share link, analytics, server-side rendering (Node), MCP server or
    monitoring; local fonts; uploads up to [`MAX_UPLOAD_BYTES`].

    Args:
        page (`gradio.Blocks`): The page.
        host (`str`, *optional*): Interface to listen on (default: `GRADIO_SERVER_NAME`, else 127.0.0.1).
        port (`int`, *optional*): Port (default: `GRADIO_SERVER_PORT`, else the first free one from 7860).
        prevent_thread_lock (`bool`, defaults to `False`): Return at once and serve from a thread (tests).
        quiet (`bool`, defaults to `False`): Do not print the URL.

    Returns:
        `(app, local_url, share_url)` as `gradio.Blocks.launch`.
    """
    gr = _import_gradio()
    # the default theme's fonts are served by gradio itself; pin it so a changed default cannot load a font CDN
    theme = gr.themes.Default(
        font=[gr.themes.LocalFont("Source Sans Pro"), "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=[gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "Consolas", "monospace"],
    )
    return page.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
        max_file_size=MAX_UPLOAD_BYTES,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        theme=theme,
        css=CSS,
    )
