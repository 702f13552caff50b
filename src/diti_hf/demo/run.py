"""[`run_demo`]: the demo's sections in order, timed, and the report they make."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import PIL.Image

from .config import INTERIM_NOTICE, OUTPUT_FILES, SWAP_GRIDS, DemoConfig
from .report import full_report, summarize, write_report
from .sections import edit_grid, evaluate_models, interpolation_grid, prepare_run, reconstruction_grid, swap_grids


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
    run, labelled = prepare_run(models, config, images)
    stages.start("reconstruction")
    reconstruction = reconstruction_grid(run)
    stages.start("swaps")
    ends = pipe.partition.end_ranges()
    ranges = {name: ends[end] for name, end in SWAP_GRIDS.items()}
    swap_grids(run, ranges)
    stages.start("interpolation")
    interpolation_grid(run, ranges)
    stages.start("edit")
    edit = edit_grid(run, labelled)
    stages.start("evaluation")
    evaluation = evaluate_models(run, labelled)
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
        "summary": summarize(evaluation, reconstruction, list(models)),
        "evaluation": evaluation,
        "files": list(OUTPUT_FILES),
        "full_report": None if config.interim else full_report(config),
        "seconds": seconds,
    }
    stages.close()
    seconds["total"] = time.perf_counter() - start
    return write_report(report, run.out, log)
