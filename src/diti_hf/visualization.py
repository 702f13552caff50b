"""Image grids: the one layout behind the PNG grids of the `diti-hf` image commands and the demo, and the tensor grids
the training scripts log to tensorboard.

A grid is a list of rows of equally sized cells, `pad` pixels apart and around (an empty cell is `None`); a caption
strip under the cells says what the rows and columns are, and [`grid_cell_box`] says where each cell lies, so that a
test or a script can crop it back out. The row builders lay out what the pipeline returns (swaps pair-major,
variants image-major) next to the images they came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch

# Grids of 16 or 32 px images are unreadable at 1:1: by default every cell is blown up to at least this many pixels.
DEFAULT_MIN_CELL = 96


# ---------------------------------------------------------------------------------------------------- layout
def grid_cell_box(
    row: int, col: int, cell_size: tuple[int, int], pad: int = 2, zoom: int = 1
) -> tuple[int, int, int, int]:
    """The `(left, top, right, bottom)` box of cell `(row, col)` in an [`image_grid`] or a [`tensor_grid`]."""
    cw, ch = cell_size[0] * zoom, cell_size[1] * zoom
    left, top = pad + col * (cw + pad), pad + row * (ch + pad)
    return left, top, left + cw, top + ch


def grid_size(
    num_rows: int, num_cols: int, cell_size: tuple[int, int], pad: int = 2, zoom: int = 1
) -> tuple[int, int]:
    """The `(width, height)` of a grid's cells: `cols·w·zoom + (cols+1)·pad` by `rows·h·zoom + (rows+1)·pad`."""
    right, bottom = grid_cell_box(num_rows - 1, num_cols - 1, cell_size, pad, zoom)[2:]
    return right + pad, bottom + pad


def default_zoom(cell_size: int, min_cell: int = DEFAULT_MIN_CELL) -> int:
    r"""
    The smallest whole zoom that makes a `cell_size`-pixel cell at least `min_cell` pixels (1 for large images).

    Args:
        cell_size (`int`): Width of one image, in pixels.
        min_cell (`int`, defaults to `DEFAULT_MIN_CELL` = 96): Smallest cell wanted, in output pixels (a 16 px image
            is zoomed 6×, a 32 px one 3×, a 64 px one 2×).
    """
    return max(1, math.ceil(min_cell / cell_size))


def image_grid(
    rows: Sequence[Sequence[PIL.Image.Image | None]],
    pad: int = 2,
    zoom: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
    caption: str | None = None,
) -> PIL.Image.Image:
    r"""
    Pastes equally sized images into a grid (`None` leaves a cell empty), `pad` pixels apart and around.

    Args:
        rows (`list[list[PIL.Image.Image | None]]`): The cells, row by row (rows may be shorter than the widest).
        pad (`int`, defaults to 2): Gap between cells and border, in output pixels.
        zoom (`int`, defaults to 1): Nearest-neighbour upscaling of every cell.
        background (`tuple[int, int, int]`, defaults to white): Colour of gaps and empty cells.
        caption (`str`, *optional*): Text printed under the cells (wrapped to the grid's width; `\n` starts a new
            line), e.g. what the rows and columns are. The cells stay where [`grid_cell_box`] says.

    Returns:
        `PIL.Image.Image`: RGB, [`grid_size`] large, plus the caption's height.
    """
    cells = [im for row in rows for im in row if im is not None]
    if not cells:
        raise ValueError("`rows` holds no image.")
    w, h = cells[0].size
    if any(im.size != (w, h) for im in cells):
        raise ValueError(f"every grid cell must be {w}×{h}, got sizes {sorted({im.size for im in cells})}.")
    n_cols = max(len(row) for row in rows)
    grid = PIL.Image.new("RGB", grid_size(len(rows), n_cols, (w, h), pad, zoom), background)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is not None:
                cell = image.convert("RGB")
                if zoom != 1:
                    cell = cell.resize((w * zoom, h * zoom), PIL.Image.NEAREST)
                grid.paste(cell, grid_cell_box(r, c, (w, h), pad, zoom)[:2])
    if caption:
        strip = caption_strip(caption, grid.width, pad, background)
        captioned = PIL.Image.new("RGB", (grid.width, grid.height + strip.height), background)
        captioned.paste(grid, (0, 0))
        captioned.paste(strip, (0, grid.height))
        grid = captioned
    return grid


def caption_strip(
    text: str, width: int, pad: int = 2, background: tuple[int, int, int] = (255, 255, 255)
) -> PIL.Image.Image:
    """`text` in black on `background`, word-wrapped to `width` pixels (PIL's default font)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and measure.textlength(trial, font=font) > width - 2 * pad:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    if hasattr(font, "getmetrics"):
        ascent, descent = font.getmetrics()
        line_height = ascent + descent + 2
    else:  # PIL's bitmap font, without FreeType
        line_height = font.getbbox("Ag")[3] + 3
    strip = PIL.Image.new("RGB", (width, len(lines) * line_height + pad), background)
    draw = ImageDraw.Draw(strip)
    for k, line in enumerate(lines):
        draw.text((pad, k * line_height), line, fill=(0, 0, 0), font=font)
    return strip


def tensor_grid(rows: Sequence[torch.Tensor], padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    r"""
    The [`image_grid`] layout (zoom 1, no caption) for tensors, e.g. the validation grids logged to tensorboard.

    Args:
        rows (`Sequence[torch.Tensor]`): Each `(N, C, H, W)` in [0, 1], the same `C, H, W`; rows may differ in `N`.
        padding (`int`, defaults to 2): Pixels between images and around them.
        pad_value (`float`, defaults to 1.0): Value of the padding and of empty cells.

    Returns:
        `torch.Tensor`: `(C, H_grid, W_grid)` in [0, 1].
    """
    if not rows:
        raise ValueError("`rows` is empty.")
    c, h, w = rows[0].shape[1:]
    width, height = grid_size(len(rows), max(r.shape[0] for r in rows), (w, h), padding)
    grid = torch.full((c, height, width), pad_value, dtype=torch.float32)
    for i, row in enumerate(rows):
        if row.shape[1:] != (c, h, w):
            raise ValueError(f"row {i} has images of shape {tuple(row.shape[1:])}, expected {(c, h, w)}.")
        for j, image in enumerate(row.detach().float().cpu().clamp(0, 1)):
            left, top, right, bottom = grid_cell_box(i, j, (w, h), padding)
            grid[:, top:bottom, left:right] = image
    return grid


def save_grid(
    rows: Sequence[Sequence[PIL.Image.Image | None]], path: str | Path, zoom: int = 1, caption: str | None = None
) -> Path:
    """Writes the [`image_grid`] of `rows` (with `caption` under it) to `path`, creating its folder; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, zoom=zoom, caption=caption).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- rows
def swap_grid_rows(
    sources: Sequence[Any], targets: Sequence[Any], swapped: Sequence[Any], range_index: int = 0, num_ranges: int = 1
) -> list[list[Any]]:
    r"""
    The grid of one swapped range: targets in the first row, sources in the first column, each other cell its row's
    source swapped with its column's target.

    Args:
        sources, targets (`Sequence`): The images of the first column and of the first row.
        swapped (`Sequence`): What `pipe.swap(sources, targets, ..., all_pairs=True).images` returns: pair-major
            (pair `s * len(targets) + t`), `num_ranges` images per pair.
        range_index (`int`, defaults to 0): The range whose grid to lay out.
        num_ranges (`int`, defaults to 1): The number of ranges swapped.
    """
    n = len(targets)
    cells = swapped[range_index::num_ranges]
    return [[None, *targets]] + [[source, *cells[i * n : (i + 1) * n]] for i, source in enumerate(sources)]


def variant_rows(
    inputs: Sequence[Any], variants: Sequence[Any], after: Sequence[Any] | None = None
) -> list[list[Any]]:
    """One row per input: the input, its variants (`variants` image-major, as the pipeline's `edit` and `interpolate`
    return them), then `after[i]` if given (e.g. the interpolation's target)."""
    k = len(variants) // len(inputs)
    rows = [[image, *variants[i * k : (i + 1) * k]] for i, image in enumerate(inputs)]
    return rows if after is None else [[*row, end] for row, end in zip(rows, after)]


def swap_caption(title: str, what: str) -> str:
    """The caption of a swap grid: `title`, then how to read the grid, `what` naming the swapped chunks."""
    return (
        f"{title}. First row: targets; first column: sources; each other image: its row's source with the "
        f"z-chunks of {what} taken from its column's target"
    )


__all__ = [
    "DEFAULT_MIN_CELL",
    "caption_strip",
    "default_zoom",
    "grid_cell_box",
    "grid_size",
    "image_grid",
    "save_grid",
    "swap_caption",
    "swap_grid_rows",
    "tensor_grid",
    "variant_rows",
]
