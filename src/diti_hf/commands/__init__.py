"""The `diti-hf` subcommands, one module each (as in `huggingface_hub.commands`).

Every module has `add_parser(subparsers)`, which adds its parser and sets `handler=run`, and `run(args) -> int`,
which calls the library and returns the exit code; `_common` holds the flags and helpers they share. A new
command is a new module listed in `SUBCOMMANDS`, in help order: the demo first, then the everyday commands, then
the tools.
"""

from __future__ import annotations

from . import app, convert, demo, edit, encode, evaluate, export, interpolate, partition, reconstruct, swap

SUBCOMMANDS = (demo, app, encode, reconstruct, swap, interpolate, edit, evaluate, partition, convert, export)

__all__ = ["SUBCOMMANDS"]
