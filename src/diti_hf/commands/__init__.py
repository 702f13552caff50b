"""The `diti-hf` subcommands, one module each (as in `huggingface_hub.commands`).

Every module has `add_parser(subparsers)`, which adds its parser and sets `handler=run`, and `run(args) -> int`,
which calls the library and returns the exit code; `_common` holds the flags and helpers they share. A new
command is a new module named as the command and listed in `COMMANDS`, in help order: the demo first, then the
everyday commands, then the tools.

`COMMANDS` holds the one-line help of each command, so that `diti-hf --help` lists them without importing any
command module's dependencies (torch, diffusers): `diti_hf.cli` builds the parser of the chosen command only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# command (= module name) → the one-line help `diti-hf --help` shows
COMMANDS: dict[str, str] = {
    "demo": "the demo (make demo): reconstructions, swaps, interpolation, edit, alignment, metrics report",
    "app": "the browser app (Gradio): two images, a time-step range; swap, interpolate, edit, reconstruct",
    "encode": "encode images into time-step-modular features z (.npy / .parquet, optionally sharded)",
    "reconstruct": "invert and regenerate images (autoencoding); writes reconstruction.png",
    "swap": "counterfactuals: swap the chunks of a time-step range from targets into sources; PNG grids",
    "interpolate": "interpolate the chunks of one time-step range between image pairs; interpolation.png",
    "edit": "move images along a linear classifier direction in z; edit.png",
    "evaluate": "probes, time-step alignment, counterfactual score, reconstruction → report.json + plots",
    "partition": "fit a staged partition to a frozen DDPM's loss profile (what train_diti.py --partition auto does)",
    "convert": "convert an official PDAE/DiTi checkpoint to diti_hf folders",
    "export": "write the pipeline folder (EMA weights) of a training checkpoint",
}


def command_module(name: str) -> ModuleType:
    """The module of command `name` (one of `COMMANDS`), imported now."""
    if name not in COMMANDS:
        raise KeyError(f"no diti-hf command {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["COMMANDS", "command_module"]
