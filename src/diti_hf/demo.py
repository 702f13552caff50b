"""The `diti-hf demo` job (`make demo`): what a DiTi model does, end to end, on CPU, without network.

It runs a trained pipeline — by default the shipped `pretrained/diti-shapes32/` with its PDAE baseline
`pretrained/pdae-shapes32/` side by side, both trained against the frozen DDPM `pretrained/ddpm-shapes32/` — and
writes reconstructions, late- and early-chunk swaps, an interpolation strip, a classifier-direction edit, the
time-step alignment heatmap and a report of the evaluation metrics. These are small demonstration models: their swaps
change the image, but not yet one attribute group at a time (README.md, "Results", has the measured numbers).

The interim mode (`--official-fixture DIR`, or the fallback where no trained model is found) runs the official
fixture checkpoint (random weights) instead: it checks parity with the official implementation and makes the same
pipeline calls, but its images mean nothing. The default paths are looked up in the working directory, then in the
source checkout this package runs from (a wheel install has neither `pretrained/` nor the fixture).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from .evaluation.probes import fit_direction_probe as train_logistic_probe  # the demo's edit direction

# the grid helpers live in diti_hf.visualization; these names stay importable from here
from .visualization import (
    caption_strip,
    default_zoom,
    grid_cell_box,
    image_grid,
    save_grid,
    swap_caption,
    swap_grid_rows,
    variant_rows,
)

INTERIM_NOTICE = (
    "INTERIM DEMO: this runs the official fixture checkpoint (random weights), not a trained model, so the images are "
    "not meaningful — it shows the pipeline end to end and the parity numbers. The trained models are in the source "
    "checkout's pretrained/ (diti-shapes32, pdae-shapes32, ddpm-shapes32): pass --model DIR to run one."
)
DEFAULT_MODEL = "pretrained/diti-shapes32"
DEFAULT_BASELINE = "pretrained/pdae-shapes32"
DEFAULT_FIXTURE = "tests/fixtures/official-diti"
OUTPUT_FILES = (
    "reconstruction.png",
    "swap_coarse.png",
    "swap_fine.png",
    "interpolation.png",
    "edit.png",
    "alignment_heatmap.png",
    "report.md",
    "report.json",
)
FIXTURE_FILES = (
    "dpm_config.yml",
    "pretrained_dpm_checkpoint.pt",
    "diti_config.yml",
    "diti_checkpoint.pt",
    "reference_outputs.safetensors",
)
# What the demo leaves to `diti-hf evaluate` (named in its output and report.md): minutes on a CPU together.
FULL_REPORT_SECTIONS = (
    "the disentanglement metrics (DCI, MIG, SAP, FactorVAE)",
    "regeneration",
    "sample validity",
    "the loss profile",
    "the swap protocols",
)
# ... and what it runs only with --counterfactual (`DemoConfig.evaluate_counterfactual`): read by a trained oracle
ORACLE_SECTIONS = "the counterfactual swap score and the DDPM's attribute-loss times (--counterfactual)"
# max abs error bounds of the parity check (README "Correctness"; inversion: float32 noise of the reference itself)
PARITY_TOLERANCES = {"eps": 1e-4, "shift_G": 1e-4, "encoder": 1e-4, "ddim_inversion": 2e-4, "ddim_generation": 1e-4}


# ---------------------------------------------------------------------------------------------------- helpers
# The swap grids' names (swap_coarse.png, the report's "coarse") → the chunks they swap (`end_ranges` of the
# partition). The names are DiTi's hypothesis for those chunks; whether a model bears it out, its evaluation measures.
SWAP_GRIDS = {"coarse": "late", "fine": "early"}


def _to01(pipe: Any, images: Any) -> torch.Tensor:
    return (pipe.preprocess(images).float().cpu() / 2 + 0.5).clamp(0, 1)


def _pil(pipe: Any, images01: torch.Tensor) -> list[PIL.Image.Image]:
    return pipe.postprocess(images01 * 2 - 1, "pil")


# ---------------------------------------------------------------------------------------------------- interim
def official_fixture_pipeline(fixture_dir: str | Path, log: Callable[[str], None] = print) -> tuple[Any, dict]:
    r"""
    Converts the official fixture checkpoint (random weights, 64×64) with [`~diti_hf.conversion.convert_official`]
    and measures parity against its `reference_outputs.safetensors`: max abs errors of ε_θ, the decoder shift G, the
    encoder, and 10-step masked DDIM inversion and generation.

    Returns:
        `(pipeline, parity)`: the [`~diti_hf.DiTiPipeline`] and `{quantity: {"max_abs_error", "tolerance", "ok"}}`.
    """
    from safetensors.torch import load_file

    from .conversion import convert_official
    from .models.denoiser import denoise
    from .pipelines import DiTiPipeline

    fixture = Path(fixture_dir)
    missing = [name for name in FIXTURE_FILES if not (fixture / name).is_file()]
    if missing:
        raise ValueError(f"{str(fixture)!r} is not the official fixture folder: it lacks {missing}.")
    converted = convert_official(
        fixture / "dpm_config.yml",
        fixture / "pretrained_dpm_checkpoint.pt",
        fixture / "diti_config.yml",
        fixture / "diti_checkpoint.pt",
    )
    pipe = DiTiPipeline(converted.unet, converted.encoder, converted.decoder, converted.scheduler)
    ref = load_file(fixture / "reference_outputs.safetensors")
    with torch.no_grad():
        out = denoise(pipe.unet, pipe.decoder, ref["x_t"], ref["t"], ref["z"])
        z = pipe.encoder(ref["encoder_input"]).z
    pipe.set_progress_bar_config(disable=True)
    inverted = pipe.invert(ref["ddim_x0"], z=ref["ddim_z"], num_inference_steps=10).latents
    generated = pipe(z=ref["ddim_z"], latents=ref["ddim_xT"], num_inference_steps=10, output_type="pt").images * 2 - 1
    errors = {
        "eps": out.eps - ref["eps"],
        "shift_G": out.shift - ref["gradient"],
        "encoder": z - ref["encoder_output"],
        "ddim_inversion": inverted - ref["ddim_xT"],
        "ddim_generation": generated - ref["ddim_recon"],
    }
    parity = {}
    for name, diff in errors.items():
        err = float(diff.abs().max())
        parity[name] = {
            "max_abs_error": err,
            "tolerance": PARITY_TOLERANCES[name],
            "ok": err <= PARITY_TOLERANCES[name],
        }
        log(f"  parity {name:16s} max abs error {err:.2e}  (tolerance {PARITY_TOLERANCES[name]:.0e})")
    return pipe, parity


# ---------------------------------------------------------------------------------------------------- the demo
@dataclass
class DemoConfig:
    r"""
    Sizes of the demo (defaults: under a minute on 2 CPU cores with the shipped 32×32 models). The demo writes the
    grids and the headline metrics; the rest of the evaluation report (`FULL_REPORT_SECTIONS`) is `diti-hf evaluate`'s.

    Args:
        output_dir (`str`, defaults to `"outputs/demo"`): Where the files go.
        steps (`int`, defaults to 20): DDIM steps of every inversion / generation (the parity check always uses 10).
        batch_size (`int`, defaults to 16): Generation batch size.
        seed (`int`, defaults to 0): Seed of the procedural images, probes and evaluation.
        num_images (`int`, defaults to 1000): Labelled procedural images for the edit probe and the evaluation.
        num_examples (`int`, defaults to 4): Images shown in the grids (sources × targets of the swaps).
        edit_factor (`str`, defaults to `"background"`): The factor whose first class the edit probe detects.
        edit_class (`str`, *optional*): Its class (default: the first class name).
        edit_scales (`list[float]`): Edit step sizes.
        num_swap_pairs (`int`, defaults to 24): Counterfactual pairs of the evaluation.
        eval_steps (`int`, defaults to 10): DDIM steps of the evaluation's counterfactual swaps.
        evaluate_counterfactual (`bool`, defaults to `False`): Also run the sections read by the oracle (trained on
            the labelled images): the counterfactual swap score and the frozen DDPM's attribute-loss time per factor
            (about 20 s more on 2 CPU cores).
        zoom (`int`, *optional*): Grid cell upscaling (default: cells of at least `DEFAULT_MIN_CELL` = 96 px).
        interim (`bool`, defaults to `False`): The fixture run (notice everywhere, no counterfactual score).
        model, baseline (`str`, *optional*): Where the pipelines came from (recorded in the report).
    """

    output_dir: str = "outputs/demo"
    steps: int = 20
    batch_size: int = 16
    seed: int = 0
    num_images: int = 1000
    num_examples: int = 4
    edit_factor: str = "background"
    edit_class: str | None = None
    edit_scales: list[float] = field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0])
    num_swap_pairs: int = 24
    eval_steps: int = 10
    evaluate_counterfactual: bool = False
    zoom: int | None = None
    interim: bool = False
    model: str | None = None
    baseline: str | None = None


class _Stages:
    """Times the demo's steps into `seconds` and shows them as one progress bar."""

    NAMES = ("data", "reconstruction", "swaps", "interpolation", "edit", "evaluation", "report")

    def __init__(self, seconds: dict[str, float], progress: bool) -> None:
        from tqdm.auto import tqdm

        self.seconds = seconds
        self.bar = tqdm(total=len(self.NAMES), desc="demo", unit="step", disable=not progress)
        self.current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self._finish()
        self.current = (name, time.perf_counter())
        self.bar.set_description(f"demo: {name}")

    def close(self) -> None:
        self._finish()
        self.bar.close()

    def _finish(self) -> None:
        if self.current is not None:
            name, started = self.current
            self.seconds[name] = time.perf_counter() - started
            self.bar.update(1)
            self.current = None


@dataclass
class _DemoRun:
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


def run_demo(
    pipe: Any,
    config: DemoConfig,
    baseline: Any = None,
    images: Sequence[PIL.Image.Image] | None = None,
    parity: dict | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    setup_seconds: float = 0.0,
) -> dict[str, Any]:
    r"""
    Runs the demo on a loaded pipeline and writes [`OUTPUT_FILES`] into `config.output_dir`.

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The DiTi pipeline.
        config ([`DemoConfig`]): Sizes and paths.
        baseline ([`~diti_hf.DiTiPipeline`], *optional*): A PDAE pipeline reported side by side.
        images (`list[PIL.Image.Image]`, *optional*): Images for the grids (default: procedural shapes).
        parity (`dict`, *optional*): The parity check of the interim mode (see [`official_fixture_pipeline`]).
        log (`Callable[[str], None]`, defaults to `print`): Progress messages.
        progress (`bool`, defaults to `True`): Progress bars.
        setup_seconds (`float`, defaults to 0): Time spent before the call (loading, conversion, parity), reported
            in `seconds["setup"]` and the total.

    Returns:
        `dict`: The report (also `report.json`).
    """
    start = time.perf_counter() - setup_seconds
    seconds: dict[str, float] = {"setup": setup_seconds}
    models = {"diti": pipe} if baseline is None else {"diti": pipe, "pdae": baseline}
    for p in models.values():
        p.set_progress_bar_config(disable=True)
    stages = _Stages(seconds, progress)
    stages.start("data")
    run, labelled = _demo_data(models, config, images)
    stages.start("reconstruction")
    reconstruction = _reconstruction_grid(run)
    stages.start("swaps")
    ends = pipe.partition.end_ranges()
    ranges = {name: ends[end] for name, end in SWAP_GRIDS.items()}
    _swap_grids(run, ranges)
    stages.start("interpolation")
    _interpolation_grid(run, ranges)
    stages.start("edit")
    edit = _edit_grid(run, labelled)
    stages.start("evaluation")
    evaluation = _evaluation(run, labelled)
    stages.start("report")
    report: dict[str, Any] = {
        "mode": "interim" if config.interim else "trained",
        "notice": INTERIM_NOTICE if config.interim else None,
        "model": config.model,
        "baseline": config.baseline,
        "config": asdict(config),
        "partition": pipe.partition.to_dict(),
        "swap_ranges": {label: list(r) for label, r in ranges.items()},
        "parity": parity,
        "reconstruction": reconstruction,
        "edit": edit,
        "summary": _summary(evaluation, reconstruction, list(models)),
        "evaluation": evaluation,
        "files": list(OUTPUT_FILES),
        "full_report": None if config.interim else _full_report(config),
        "seconds": seconds,
    }
    stages.close()
    seconds["total"] = time.perf_counter() - start
    return _write_report(report, run.out, log)


def _demo_data(models: dict[str, Any], config: DemoConfig, images: Sequence | None) -> tuple[_DemoRun, Any]:
    """The labelled procedural images (for the edit probe and the evaluation) and the example images of the grids."""
    from .data.shapes import generate_shapes

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
    return _DemoRun(models, config, out, zoom, images, shown01, _pil(pipe, shown01)), labelled


def _reconstruction_grid(run: _DemoRun) -> dict[str, Any]:
    """Reconstructs the examples with every model (metrics of each) and writes the first model's grid."""
    from .evaluation import compare_images

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


def _swap_grids(run: _DemoRun, ranges: dict[str, tuple[int, int]]) -> None:
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


def _interpolation_grid(run: _DemoRun, ranges: dict[str, tuple[int, int]]) -> None:
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


def _edit_grid(run: _DemoRun, labelled: Any) -> dict[str, Any]:
    """Trains the edit probe on the labelled images' z, edits the examples along it: edit.png and the edit report."""
    import datasets

    from .data.shapes import SHAPES_DATASET_NAME

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
    probe = train_logistic_probe(z, target, seed=config.seed)
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
    from .evaluation import EvaluationConfig, ProbeConfig

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


def _evaluation(run: _DemoRun, labelled: Any) -> dict[str, Any]:
    """The evaluation report of every model (files in `evaluation/`) and alignment_heatmap.png."""
    from .data.shapes import SHAPES_DATASET_NAME
    from .evaluation import evaluate_pipeline

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


def _write_report(report: dict[str, Any], out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Writes report.json and report.md; returns the report as written (JSON-safe)."""
    from .evaluation import json_safe

    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    log(f"wrote {', '.join(OUTPUT_FILES)} to {out} in {report['seconds']['total']:.0f} s")
    log("seconds per section: " + ", ".join(f"{name} {s:.1f}" for name, s in report["seconds"].items()))
    if report["full_report"]:
        full = report["full_report"]
        log(f"not run by the demo: {', '.join(full['not_run'])}; the full report: {full['command']}")
    return report


def _full_report(config: DemoConfig) -> dict[str, Any]:
    """What the demo did not run and the `diti-hf evaluate` command line of the full report on its models."""
    command = f"diti-hf evaluate --model {config.model or DEFAULT_MODEL}"
    if config.baseline:
        command += f" --baseline {config.baseline}"
    oracle = [] if config.evaluate_counterfactual else [ORACLE_SECTIONS]
    return {"not_run": [*oracle, *FULL_REPORT_SECTIONS], "command": command + " --output-dir outputs/evaluate"}


def _text_image(text: str) -> PIL.Image.Image:
    from PIL import ImageDraw

    image = PIL.Image.new("RGB", (8 * len(text) + 20, 40), (255, 255, 255))
    ImageDraw.Draw(image).text((10, 14), text, fill=(0, 0, 0))
    return image


def _summary(evaluation: dict, reconstruction: dict, names: list[str]) -> dict[str, dict[str, Any]]:
    """Headline numbers per model (DiTi and PDAE side by side), from the evaluation report."""
    summary = {}
    for name, entry in evaluation["models"].items():
        alignment = entry.get("alignment") or {}
        counterfactual = entry.get("counterfactual") or {}
        rec = entry.get("reconstruction") or reconstruction.get(name) or {}
        summary[name] = {
            "num_chunks": entry.get("num_chunks"),
            "feature_dim": entry.get("feature_dim"),
            "probe_mean_accuracy": entry["probe"]["mean_accuracy"],
            "probe_mean_average_precision": entry["probe"]["mean_average_precision"],
            "alignment_spearman": alignment.get("spearman_timestep_vs_granularity"),
            "counterfactual_targeted_flip_rate": counterfactual.get("targeted_flip_rate"),
            "counterfactual_leakage": counterfactual.get("leakage"),
            **{
                f"disentanglement_{key}": (entry.get("disentanglement") or {}).get(key)
                for key in (
                    "dci_disentanglement",
                    "dci_completeness",
                    "dci_informativeness",
                    "mig",
                    "sap",
                    "factor_vae",
                )
            },
            "reconstruction_mse": rec.get("mse") if name in names else None,
            "reconstruction_psnr": rec.get("psnr") if name in names else None,
            "reconstruction_ssim": rec.get("ssim") if name in names else None,
        }
    return summary


def _factor_table(evaluation: dict) -> list[str]:
    """Per factor: granularity, the DDPM's attribute-loss time and each partitioned model's decodable time-step."""
    aligned = {n: e["alignment"] for n, e in evaluation["models"].items() if e.get("alignment")}
    factors = evaluation["dataset"]["factors"]
    loss_times = any(f.get("ddpm_attribute_loss_time") is not None for f in factors)  # measured (--counterfactual)
    header = ["factor", "granularity", *["DDPM attribute-loss t"] * loss_times, *[f"{n} decodable t" for n in aligned]]
    lines = ["", "## Factors", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for factor in factors:
        name = factor["name"]
        cells = [name, _fmt(factor.get("granularity"))]
        cells += [_fmt_t(factor.get("ddpm_attribute_loss_time"))] * loss_times
        cells += [_fmt_t(a["decodable_timestep"].get(name)) for a in aligned.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _partition_text(partition: dict) -> str:
    text = (
        f"z of {partition['latent_dim']} dims in {partition['num_chunks']} chunks over "
        f"T = {partition['num_train_timesteps']} time-steps"
    )
    if partition.get("stages"):
        text += f", stages {partition['stages']} with {partition['dims_per_stage']} dims"
    return text


def _fmt_t(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0f}"


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _markdown(report: dict) -> str:
    lines = ["# diti-hf demo", ""]
    if report["notice"]:
        lines += [f"**{report['notice']}**", ""]
    lines += [
        f"- model: `{report['model']}`" + (f", baseline: `{report['baseline']}`" if report["baseline"] else ""),
        f"- partition: {_partition_text(report['partition'])}",
        f"- swaps: late chunks t ∈ {report['swap_ranges']['coarse']}, early chunks t ∈ "
        f"{report['swap_ranges']['fine']}",
        f"- DDIM steps: {report['config']['steps']}; run time {report['seconds']['total']:.0f} s",
        "",
    ]
    if report["parity"]:
        lines += ["## Parity with the official implementation (fixture, float32)", ""]
        lines += ["| quantity | max abs error | tolerance | ok |", "|---|---|---|---|"]
        for name, entry in report["parity"].items():
            lines.append(f"| {name} | {entry['max_abs_error']:.2e} | {entry['tolerance']:.0e} | {entry['ok']} |")
        lines.append("")
    names = list(report["summary"])
    metrics = [
        ("probe mean accuracy", "probe_mean_accuracy"),
        ("probe mean AP", "probe_mean_average_precision"),
        ("alignment Spearman (t vs granularity)", "alignment_spearman"),
        ("counterfactual targeted flip rate", "counterfactual_targeted_flip_rate"),
        ("counterfactual leakage", "counterfactual_leakage"),
        ("DCI disentanglement", "disentanglement_dci_disentanglement"),
        ("DCI completeness", "disentanglement_dci_completeness"),
        ("DCI informativeness (accuracy)", "disentanglement_dci_informativeness"),
        ("MIG", "disentanglement_mig"),
        ("SAP", "disentanglement_sap"),
        ("FactorVAE score", "disentanglement_factor_vae"),
        ("reconstruction MSE", "reconstruction_mse"),
        ("reconstruction PSNR (dB)", "reconstruction_psnr"),
        ("reconstruction SSIM", "reconstruction_ssim"),
    ]
    # only the metrics this run measured (the demo leaves the disentanglement metrics to `diti-hf evaluate`)
    metrics = [(label, key) for label, key in metrics if any(report["summary"][n][key] is not None for n in names)]
    lines += ["## Metrics", "", "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in metrics:
        lines.append(f"| {label} | " + " | ".join(_fmt(report["summary"][n][key]) for n in names) + " |")
    if report.get("full_report"):
        lines += [
            "",
            f"Reconstruction metrics: the {report['reconstruction']['diti']['num_images']} images of "
            f"`reconstruction.png`. Not run here: {', '.join(report['full_report']['not_run'])}; "
            f"`{report['full_report']['command']}` writes the full report.",
        ]
    samples = report["evaluation"].get("ddpm_samples")
    if samples:
        lines += [
            "",
            f"Frozen DDPM: {samples['valid_fraction']:.0%} of {samples['num_samples']} unconditional samples "
            f"({samples['num_inference_steps']} DDIM steps) read with confidence ≥ {samples['confidence']} on every "
            "factor by the oracle (a strong base model reaches ≥ 90 %).",
        ]
    lines += _factor_table(report["evaluation"])
    edit = report["edit"]
    lines += [
        "",
        f"Edit: logistic probe `{edit['factor']} == {edit['class']}` on z (test accuracy "
        f"{_fmt(edit['probe']['test_accuracy'])}, AP {_fmt(edit['probe']['test_average_precision'])}), "
        f"scales {edit['scales']}.",
        "",
        "## Files",
        "",
        "- `reconstruction.png`: inputs (top) over reconstructions (bottom)",
        "- `swap_coarse.png` / `swap_fine.png`: sources (rows) × targets (columns) with the late / early time-step "
        "chunks taken from the target (named after DiTi's hypothesis that these carry coarse / fine attributes)",
        "- `interpolation.png`: A | interpolations α = 0 … 1 | B, late chunks (top row) and early chunks (bottom row)",
        "- `edit.png`: input, then one column per edit scale",
        "- `alignment_heatmap.png`: factors × chunks probe accuracy (evaluation module); `evaluation/` holds every plot",
        "- `report.json`: everything above, with the full evaluation report",
        "",
    ]
    return "\n".join(lines)


def _source_checkout() -> Path | None:
    """The root of the source checkout this package runs from (`src/diti_hf/` next to a `pyproject.toml`), or `None`
    for an installed wheel, whose package folder sits in `site-packages/`."""
    package = Path(__file__).resolve().parent
    root = package.parent.parent
    return root if package.parent.name == "src" and (root / "pyproject.toml").is_file() else None


def search_roots() -> list[Path]:
    """Where [`resolve_default`] looks: the working directory, then the source checkout (if any, and another)."""
    roots = [Path.cwd()]
    checkout = _source_checkout()
    if checkout is not None and checkout != roots[0].resolve():
        roots.append(checkout)
    return roots


def resolve_default(path: str) -> Path | None:
    """`path` relative to the working directory, else to the source checkout this package runs from; `None` where
    neither has it (the caller names the flag to pass instead)."""
    here = Path(path)
    if here.exists():
        return here
    checkout = _source_checkout()
    if checkout is not None and (checkout / path).exists():
        return checkout / path
    return None


__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_FIXTURE",
    "DEFAULT_MODEL",
    "INTERIM_NOTICE",
    "OUTPUT_FILES",
    "DemoConfig",
    "caption_strip",
    "grid_cell_box",
    "image_grid",
    "official_fixture_pipeline",
    "resolve_default",
    "run_demo",
    "search_roots",
    "train_logistic_probe",
]
