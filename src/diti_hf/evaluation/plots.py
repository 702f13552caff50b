"""The figures of an evaluation report: probe accuracies, time-step alignment heatmaps, counterfactual flip rates
and the frozen DDPM's loss profile."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..partition import TimestepPartition
from .alignment import AlignmentResult
from .counterfactual import CounterfactualResult
from .loss_profile import loss_profile_figure


def _pyplot() -> Any:
    # the headless backend, so that plots are written on machines without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)  # pyplot keeps every open figure alive otherwise


def plot_alignment(result: AlignmentResult, path: str | Path, title: str = "") -> None:
    r"""
    Heatmaps factors × chunks of the prefix and single-chunk probe accuracies (normalised to chance = 0, full `z` = 1),
    with the decodable chunk of each factor marked.

    Args:
        result ([`AlignmentResult`]): The time-step alignment of one model.
        path (`str` or `Path`): The PNG written.
        title (`str`, *optional*): Prefix of each panel's title (the model name).
    """
    plt = _pyplot()
    chance = result.chance[:, None]
    full = result.prefix_accuracy[:, -1:]
    scale = (full - chance).clamp_min(1e-6)
    panels = [
        ("prefix z[:end(i)]", (result.prefix_accuracy - chance) / scale),
        ("single chunk i", (result.single_accuracy - chance) / scale),
    ]
    n_f, k = result.prefix_accuracy.shape
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 0.1 * k + 3) * 2, 0.45 * n_f + 1.8), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels):
        im = ax.imshow(values.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(n_f), result.factor_names)
        step = max(1, k // 8)
        ax.set_xticks(range(0, k, step), [str(result.chunk_timesteps[i][0]) for i in range(0, k, step)])
        ax.set_xlabel("chunk (start time-step)")
        ax.set_title(f"{title} — {label}")
        for f, c in enumerate(result.decodable_chunk):
            if c is not None and label.startswith("prefix"):
                ax.plot(c, f, marker="o", color="red", markersize=4)
        fig.colorbar(im, ax=ax, fraction=0.04)
    _save(fig, path)


def plot_flips(result: CounterfactualResult, path: str | Path, title: str = "") -> None:
    r"""
    Heatmap factors × swapped time-step ranges of the flip rate.

    Args:
        result ([`CounterfactualResult`]): The counterfactual score of one model.
        path (`str` or `Path`): The PNG written.
        title (`str`, *optional*): Prefix of the title (the model name).
    """
    plt = _pyplot()
    n_f, n_r = result.flip.shape
    fig, ax = plt.subplots(figsize=(1.2 * n_r + 3, 0.45 * n_f + 1.8))
    im = ax.imshow(result.flip.float().numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(range(n_f), result.factor_names)
    ax.set_xticks(range(n_r), [f"[{lo},{hi})" for lo, hi in result.ranges])
    for f in range(n_f):
        for r in range(n_r):
            v = float(result.flip[f, r])
            if math.isfinite(v):
                ax.text(r, f, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xlabel("swapped time-step range")
    ax.set_title(f"{title} — flip rate (factor follows B)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    _save(fig, path)


def plot_probes(report: Mapping[str, Any], path: str | Path) -> None:
    r"""
    Grouped bars: per-factor linear-probe test accuracy of every model and baseline.

    Args:
        report (`dict`): An [`evaluate_pipeline`] report.
        path (`str` or `Path`): The PNG written.
    """
    plt = _pyplot()
    names = [n for n, entry in report["models"].items() if entry.get("probe")]  # a bare DDPM has no features
    factors = [f["name"] for f in report["dataset"]["factors"]]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(factors) + 2), 3.5))
    for j, name in enumerate(names):
        acc = [report["models"][name]["probe"]["accuracy"][f] or 0.0 for f in factors]
        ax.bar(np.arange(len(factors)) + j * width, acc, width, label=name)
    ax.set_xticks(np.arange(len(factors)) + 0.4 - width / 2, factors, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    _save(fig, path)


def write_plots(
    report: Mapping[str, Any],
    alignments: Mapping[str, AlignmentResult],
    counterfactuals: Mapping[str, CounterfactualResult],
    output_dir: str | Path,
) -> list[str]:
    r"""
    Writes every plot of a report into `output_dir`.

    Args:
        report (`dict`): An [`evaluate_pipeline`] report.
        alignments (`dict[str, AlignmentResult]`): Model name → its time-step alignment.
        counterfactuals (`dict[str, CounterfactualResult]`): Model name → its counterfactual score.
        output_dir (`str` or `Path`): An existing folder.

    Returns:
        `list[str]`: The file names written, in order.
    """
    out = Path(output_dir)
    files = []
    if any(entry.get("probe") for entry in report["models"].values()):  # a bare DDPM without baselines has none
        files.append("probes.png")
        plot_probes(report, out / files[0])
    section = report.get("loss_profile")
    if section:
        loss_times = (report.get("attribute_loss") or {}).get("loss_time")
        for suffix, key in (("", "partition"), ("_auto", "auto_partition")):
            if section.get(key) or not suffix:
                partition = TimestepPartition.from_dict(section[key]) if section.get(key) else None
                title = "frozen DDPM loss profile" + (" — fitted partition" if suffix else "")
                files.append(f"loss_profile{suffix}.png")
                loss_profile_figure(section, partition, loss_times, title).savefig(out / files[-1])
    for name, result in alignments.items():
        files.append(f"alignment_{name}.png")
        plot_alignment(result, out / files[-1], name)
    for name, result in counterfactuals.items():
        files.append(f"counterfactual_{name}.png")
        plot_flips(result, out / files[-1], name)
    return files
