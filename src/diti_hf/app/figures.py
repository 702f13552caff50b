"""What the page shows about the model: its header, the range picker's presets, the partition figure and table, the
description of a time-step range and the alignment heatmap of an evaluation report. Nothing here needs gradio.
"""

from __future__ import annotations

import os
from pathlib import Path

import PIL.Image
from PIL import ImageDraw

from ..partition import TimestepPartition
from .actions import DiTiApp

# The evaluation report of the shipped model, shown with it by `diti-hf app` without --model.
DEFAULT_REPORT = "benchmarks/shapes32"
# The report files `diti-hf demo` and `examples/evaluate.py` write the factors × chunks heatmap to.
ALIGNMENT_IMAGE_NAMES = ("alignment_heatmap.png", "alignment_diti.png", "evaluation/alignment_diti.png")

# What the page's header says about the method, and about a model whose measurements it is not given.
AIM = (
    "DiTi aims to tie ranges of time-steps to attributes, late ones to coarse attributes (shape, layout) and early "
    "ones to fine attributes (colour, texture), so that swapping a range swaps those attributes."
)
UNMEASURED = (
    "Whether a model achieves this is measured by its evaluation report (`diti-hf evaluate`), not assumed by this "
    "page."
)
# The shipped pretrained/diti-shapes32, measured in benchmarks/shapes32 (README "Results", its model card).
SHIPPED_FINDINGS = (
    "Measured on this model: not yet. Only swaps of the earliest range [0, 250) change anything, and they change "
    "several attributes at once (object colour 59 %, scale 46 %, texture 38 %); no attribute is cleanly controlled by "
    "any range."
)


def page_header(app: DiTiApp, device: str) -> str:
    """The page's header (markdown): the model, what to do, what DiTi aims for and what this model measured."""
    partition, res = app.partition, app.resolution
    kind = "staged" if partition.stages is not None else "uniform"
    return (
        f"# DiTi: swap what a range of diffusion time-steps encodes\n"
        f"**{app.model_name}** · z of {partition.latent_dim} dims in {partition.num_chunks} chunks ({kind}) over "
        f"T = {partition.num_train_timesteps} · {res}×{res} images · {device}. Upload two images (or draw two "
        f"shapes), pick a time-step range, then reconstruct, swap, interpolate or edit. {AIM} "
        f"{app.findings or UNMEASURED}"
    )


# ---------------------------------------------------------------------------------------------------- the partition
def preset_ranges(partition: TimestepPartition) -> dict[str, tuple[int, int]]:
    r"""
    The ranges offered by the range picker, labelled with their time-steps: the partition's
    [`~diti_hf.TimestepPartition.preset_ranges`] (the late and the early chunks, all time-steps, each stage of a staged
    partition, each chunk).

    Returns:
        `dict[str, tuple[int, int]]`: label → half-open time-step range.
    """
    return {f"{name}: t ∈ [{lo}, {hi})": (lo, hi) for name, (lo, hi) in partition.preset_ranges().items()}


def describe_range(partition: TimestepPartition, lo: int, hi: int) -> str:
    """One markdown line: the chunks and dims of `z` a time-step range selects, and the time-steps it acts on."""
    resolved = partition.resolve_range(timesteps=(lo, hi))
    (i, j), (start, end) = resolved.chunks, resolved.dims
    chunks = f"chunk {i}" if j - i == 1 else f"chunks {i}–{j - 1}"
    t_lo, t_hi = resolved.timesteps
    widened = f" An edit acts on whole chunks: t ∈ [{t_lo}, {t_hi})." if resolved.widened else ""
    return (
        f"t ∈ [{lo}, {hi}) meets **{chunks}** of {partition.num_chunks} → **dims [{start}, {end})** of z "
        f"({end - start} of {partition.latent_dim}).{widened} The figure: chunks over t (top) and the dims of z they "
        "own (bottom), the range in orange, stage edges thick."
    )


def partition_figure(partition: TimestepPartition, lo: int | None = None, hi: int | None = None) -> PIL.Image.Image:
    r"""
    Draws the partition: the time axis `[0, T)` cut into chunks (stage edges drawn thick) above the dims of `z` each
    chunk owns, with the chunks and dims of the range `[lo, hi)` highlighted.

    Returns:
        `PIL.Image.Image`: RGB, 720 × 150 pixels.
    """
    width, margin, bar = 720, 40, 34
    T, d, k = partition.num_train_timesteps, partition.latent_dim, partition.num_chunks
    image = PIL.Image.new("RGB", (width, 150), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    span = width - 2 * margin
    picked = lo is not None and hi is not None and lo < hi
    selected = partition.resolve_range(timesteps=(lo, hi)).chunks if picked else (0, 0)

    def x_of(value: float, total: int) -> int:
        return margin + round(span * value / total)

    rows = (("time-step t", 22, T, partition.chunk_timesteps), ("dims of z", 92, d, partition.chunk_dims))
    for label, top, total, bounds in rows:
        draw.text((margin, top - 14), label, fill=(60, 60, 60))
        for i in range(k):
            a, b = bounds(i)
            picked = selected[0] <= i < selected[1]
            shade = (249, 115, 22) if picked else ((203, 213, 225) if i % 2 else (226, 232, 240))
            draw.rectangle((x_of(a, total), top, max(x_of(a, total), x_of(b, total) - 1), top + bar), fill=shade)
        draw.text((margin - 4, top + bar + 2), "0", fill=(60, 60, 60))
        draw.text((width - margin - 12, top + bar + 2), str(total), fill=(60, 60, 60))
    for end in (partition.stages or [])[:-1]:  # the edges between stages; the last stage ends at T
        x = x_of(end, T)
        draw.line((x, 18, x, 22 + bar + 4), fill=(15, 23, 42), width=3)
    # link each selected chunk's time span to its dims
    for i in range(*selected):
        (ta, tb), (da, db) = partition.chunk_timesteps(i), partition.chunk_dims(i)
        draw.line(
            ((x_of(ta, T) + x_of(tb, T)) // 2, 22 + bar, (x_of(da, d) + x_of(db, d)) // 2, 92), fill=(194, 65, 12)
        )
    return image


def partition_summary(partition: TimestepPartition) -> str:
    """Markdown: the partition in words and as the table of the model card ([`~diti_hf.hub.partition_table`])."""
    # on use: diti_hf.hub loads huggingface_hub, which `diti-hf app --help` (it reads this package) does not need
    from ..hub import partition_table

    kind = "staged" if partition.stages is not None else "uniform"
    return (
        f"z has **{partition.latent_dim} dims in {partition.num_chunks} chunks** over T = "
        f"{partition.num_train_timesteps} time-steps ({kind} partition): chunk i is used by the decoder from its "
        "time-steps down to t = 0.\n\n" + partition_table(partition)
    )


def find_alignment_image(*folders: str | os.PathLike | None) -> Path | None:
    """The first factors × chunks alignment heatmap ([`ALIGNMENT_IMAGE_NAMES`]) found in `folders` (a model folder,
    a report folder), or `None`."""
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for name in ALIGNMENT_IMAGE_NAMES:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    return None
