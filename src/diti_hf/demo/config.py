"""The demo's sizes ([`DemoConfig`]), what it writes and leaves out, and where its default models are looked up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# defined torch-free, for the commands' --help
from ..commands._common import DEFAULT_BASELINE as DEFAULT_BASELINE
from ..commands._common import DEFAULT_FIXTURE as DEFAULT_FIXTURE
from ..commands._common import DEFAULT_MODEL as DEFAULT_MODEL

INTERIM_NOTICE = (
    "INTERIM DEMO: this runs the official fixture checkpoint (random weights), not a trained model, so the images are "
    "not meaningful — it shows the pipeline end to end and the parity numbers. The trained models are in the source "
    "checkout's pretrained/ (diti-shapes32, pdae-shapes32, ddpm-shapes32): pass --model DIR to run one."
)
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
# The swap grids' names (swap_coarse.png, the report's "coarse") → the chunks they swap (`end_ranges` of the
# partition). The names are DiTi's hypothesis for those chunks; whether a model bears it out, its evaluation measures.
SWAP_GRIDS = {"coarse": "late", "fine": "early"}


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


def _source_checkout() -> Path | None:
    """The root of the source checkout this package runs from (`src/diti_hf/` next to a `pyproject.toml`), or `None`
    for an installed wheel, whose package folder sits in `site-packages/`."""
    package = Path(__file__).resolve().parent.parent  # this file is src/diti_hf/demo/config.py
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
