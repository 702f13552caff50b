"""The demo's sections: each makes one grid (or the evaluation) of the example images and writes its file."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from ..evaluation.probes import fit_direction_probe
from ..visualization import default_zoom, save_grid, swap_caption, swap_grid_rows, variant_rows
from .config import SWAP_GRIDS, DemoConfig


def _to01(pipe: Any, images: Any) -> torch.Tensor:
    """`images` as the pipeline preprocesses them, in [0, 1] on the CPU."""
    return (pipe.preprocess(images).float().cpu() / 2 + 0.5).clamp(0, 1)


def _pil(pipe: Any, images01: torch.Tensor) -> list[PIL.Image.Image]:
    """Images in [0, 1] as PIL, through the pipeline's postprocessing."""
    return pipe.postprocess(images01 * 2 - 1, "pil")


@dataclass
class DemoRun:
    """What every step of the demo works on: the pipelines, the example images and where the files go."""

    models: dict[str, Any]  # "diti" (the pipeline of the grids) and optionally "pdae"
    config: DemoConfig
    out: Path
    zoom: int
    images: list  # the example images, as given
    shown01: torch.Tensor  # ... as the model sees them, in [0, 1]
    shown: list[PIL.Image.Image]  # ... and as PIL, the grids' first row or column

    @property
    def pipe(self) -> Any:
        return self.models["diti"]


def prepare_run(models: dict[str, Any], config: DemoConfig, images: Sequence | None) -> tuple[DemoRun, Any]:
    """The labelled procedural images (for the edit probe and the evaluation) and the example images of the grids."""
    from ..data.shapes import generate_shapes

    pipe = models["diti"]
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolution = int(pipe.encoder.config.sample_size)
    labelled = generate_shapes(config.num_images, seed=config.seed, resolution=resolution)
    if images is None:
        images = generate_shapes(config.num_examples, seed=config.seed + 1, resolution=resolution)["image"]
    images = list(images)
    if len(images) < 2:
        raise ValueError(f"the demo needs at least 2 example images, got {len(images)}.")
    shown01 = _to01(pipe, images)
    zoom = config.zoom or default_zoom(resolution)
    return DemoRun(models, config, out, zoom, images, shown01, _pil(pipe, shown01)), labelled


def reconstruction_grid(run: DemoRun) -> dict[str, Any]:
    """Reconstructs the examples with every model (metrics of each) and writes the first model's grid."""
    from ..evaluation import compare_images

    steps = run.config.steps
    reconstruction: dict[str, Any] = {}
    first = None
    for name, p in run.models.items():
        rec = p.reconstruct(run.images, num_inference_steps=steps, batch_size=run.config.batch_size, output_type="pt")
        rec = rec.images.float().cpu()
        reconstruction[name] = {
            "num_images": len(run.images),
            "num_inference_steps": steps,
            **compare_images(run.shown01, rec),
        }
        first = rec if first is None else first
    caption = f"top: the inputs; bottom: their DiTi reconstructions ({steps} + {steps} DDIM steps)"
    save_grid([run.shown, _pil(run.pipe, first)], run.out / "reconstruction.png", run.zoom, caption)
    return reconstruction


def swap_grids(run: DemoRun, ranges: dict[str, tuple[int, int]]) -> None:
    """Every example with the late, then the early chunks of every other: swap_coarse.png and swap_fine.png."""
    swapped = run.pipe.swap(
        run.images,
        run.images,
        timesteps=list(ranges.values()),
        num_inference_steps=run.config.steps,
        batch_size=run.config.batch_size,
        all_pairs=True,
    ).images
    for r, (name, (lo, hi)) in enumerate(ranges.items()):
        what = f"t in [{lo}, {hi})"
        rows = swap_grid_rows(run.shown, run.shown, swapped, range_index=r, num_ranges=len(ranges))
        title = f"swap of the {SWAP_GRIDS[name]} chunks, {what}"
        save_grid(rows, run.out / f"swap_{name}.png", run.zoom, swap_caption(title, what))


def interpolation_grid(run: DemoRun, ranges: dict[str, tuple[int, int]]) -> None:
    """The first example moved to the second along the late (top row) and the early chunks: interpolation.png."""
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = []
    for label in SWAP_GRIDS:
        strip = run.pipe.interpolate(
            run.images[:1],
            run.images[1:2],
            alphas=alphas,
            timesteps=ranges[label],
            num_inference_steps=run.config.steps,
            batch_size=run.config.batch_size,
        ).images
        rows += variant_rows(run.shown[:1], strip, after=run.shown[1:2])
    (c_lo, c_hi), (f_lo, f_hi) = ranges["coarse"], ranges["fine"]
    caption = (
        f"source | alpha = {', '.join(f'{a:g}' for a in alphas)} | target. Top row: the z-chunks of t in "
        f"[{c_lo}, {c_hi}) (late chunks) interpolated; bottom row: those of t in [{f_lo}, {f_hi}) (early chunks)"
    )
    save_grid(rows, run.out / "interpolation.png", run.zoom, caption)


def edit_grid(run: DemoRun, labelled: Any) -> dict[str, Any]:
    """Trains the edit probe on the labelled images' z, edits the examples along it: edit.png and the edit report."""
    import datasets

    from ..data.shapes import SHAPES_DATASET_NAME

    config, pipe = run.config, run.pipe
    factor = config.edit_factor
    if not isinstance(labelled.features.get(factor), datasets.ClassLabel):
        raise ValueError(
            f"`edit_factor` {factor!r} is not a factor of {SHAPES_DATASET_NAME} ({labelled.column_names[1:]})."
        )
    class_names = labelled.features[factor].names
    class_name = config.edit_class or class_names[0]
    if class_name not in class_names:
        raise ValueError(f"`edit_class` {class_name!r} is not a class of {factor!r} ({class_names}).")
    pixels = torch.cat([pipe.preprocess(labelled[i : i + 256]["image"]) for i in range(0, len(labelled), 256)])
    z = pipe.encode(pixels, batch_size=max(config.batch_size, 64)).z.float().cpu()
    target = torch.tensor(list(labelled[factor])) == class_names.index(class_name)
    probe = fit_direction_probe(z, target, seed=config.seed)
    edited = pipe.edit(
        run.images,
        direction=probe["weight"],
        scales=config.edit_scales,
        z_std=probe["std"],
        num_inference_steps=config.steps,
        batch_size=config.batch_size,
    ).images
    caption = (
        f"each row: the input | scale = {', '.join(f'{s:g}' for s in config.edit_scales)} along a linear probe's "
        f"direction for {factor} = {class_name} (scale 0: the reconstruction)"
    )
    save_grid(variant_rows(run.shown, edited), run.out / "edit.png", run.zoom, caption)
    return {
        "factor": factor,
        "class": class_name,
        "scales": list(config.edit_scales),
        "probe": {key: v for key, v in probe.items() if key not in ("weight", "mean", "std")},
        "num_positive": int(target.sum()),
    }


def _evaluation_config(config: DemoConfig) -> Any:
    """The demo's evaluation: the headline metrics (linear probes, time-step alignment; with
    `evaluate_counterfactual` the oracle-read counterfactual score and attribute-loss times) and the factor table,
    and on random weights only what means something there. The rest (`FULL_REPORT_SECTIONS`) is left to
    `diti-hf evaluate`; the reconstruction metrics are the demo's own grid's."""
    from ..evaluation import EvaluationConfig, ProbeConfig

    return EvaluationConfig(
        seed=config.seed,
        probe=ProbeConfig(epochs=10 if config.interim else 15, seed=config.seed),
        counterfactual=config.evaluate_counterfactual and not config.interim,
        num_swap_ranges=3,
        num_swap_pairs=config.num_swap_pairs,
        swap_batch_size=config.batch_size,
        oracle_epochs=8,
        # the frozen DDPM's attribute-loss time per factor: read by the oracle the counterfactual score trains, and
        # meaningless with random weights and 64×64 forwards
        attribute_loss=config.evaluate_counterfactual and not config.interim,
        num_attribute_loss_images=64,
        reconstruction=False,
        num_inference_steps=config.eval_steps,
        granularity_pairs=64 if config.interim else 128,
        encode_batch_size=max(config.batch_size, 64),
        pixel_baseline=not config.interim,  # 12,288-dim pixels of the 64×64 fixture: slow and beside the point
        loss_profile=False,
        sample_validity=False,
        regeneration=False,
        swap_protocols=[],
        disentanglement=False,
    )


def evaluate_models(run: DemoRun, labelled: Any) -> dict[str, Any]:
    """The evaluation report of every model (files in `evaluation/`) and alignment_heatmap.png."""
    from ..data.shapes import SHAPES_DATASET_NAME
    from ..evaluation import evaluate_pipeline

    config, out = run.config, run.out
    resolution = int(run.pipe.encoder.config.sample_size)
    info = {"name": SHAPES_DATASET_NAME, "seed": config.seed, "resolution": resolution}
    evaluation = evaluate_pipeline(
        run.models, labelled, _evaluation_config(config), output_dir=out / "evaluation", dataset_info=info
    )
    heatmap = out / "evaluation" / "alignment_diti.png"
    if heatmap.is_file():
        shutil.copyfile(heatmap, out / "alignment_heatmap.png")
    else:  # a model with a single chunk (PDAE) has no time-step alignment to show
        _text_image(f"no time-step alignment: the model has num_chunks={run.pipe.partition.num_chunks}").save(
            out / "alignment_heatmap.png"
        )
    return evaluation


def _text_image(text: str) -> PIL.Image.Image:
    """A white image with one line of `text` (the stand-in for a plot that does not apply)."""
    from PIL import ImageDraw

    image = PIL.Image.new("RGB", (8 * len(text) + 20, 40), (255, 255, 255))
    ImageDraw.Draw(image).text((10, 14), text, fill=(0, 0, 0))
    return image
