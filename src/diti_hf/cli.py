"""The `diti-hf` command line.

Each subcommand is one `_add_<name>_parser(subparsers)` function that adds its parser and sets `handler` (a function
of the parsed arguments returning an exit code); `_SUBCOMMANDS` lists them in help order. Library errors
(`ValueError`, `TypeError`, `OSError`) are reported as one line `diti-hf: error: ...` with exit code 2, as are
command-line mistakes.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from . import __version__

PROG = "diti-hf"


class _UsageError(Exception):
    """A command-line mistake, reported like a library error (one line, exit code 2)."""


class _ArgumentParser(argparse.ArgumentParser):
    # argparse prints the whole usage block and exits; we want one line and a return code (tests call `main`).
    def error(self, message: str) -> None:
        raise _UsageError(message)


# ------------------------------------------------------------------------------------------------------- convert
def _add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PDAE/DiTi checkpoint to diti_hf folders",
        description=(
            "Convert an official pre-trained DDPM (and optionally a DiTi/PDAE checkpoint trained on it) to "
            "OUTPUT_DIR/{unet,encoder,decoder,scheduler}, each loadable with from_pretrained."
        ),
    )
    parser.add_argument("--dpm-config", required=True, metavar="FILE", help="official DDPM YAML config")
    parser.add_argument(
        "--dpm-checkpoint",
        metavar="FILE",
        help="official DDPM checkpoint (.pt); if omitted, the frozen UNet stored in --diti-checkpoint is used",
    )
    parser.add_argument("--diti-config", metavar="FILE", help="official DiTi YAML config")
    parser.add_argument("--diti-checkpoint", metavar="FILE", help="official DiTi checkpoint (.pt)")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder to write the components to")
    parser.add_argument(
        "--image-size", type=int, metavar="N", help="image size, if no config has train_dataset_config.image_size"
    )
    parser.add_argument("--no-ema", action="store_true", help="prefer the raw weights to the EMA weights")
    parser.add_argument("--overwrite", action="store_true", help="replace existing component folders")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert_official, save_converted  # heavy imports only when used

    if (args.diti_config is None) != (args.diti_checkpoint is None):
        raise _UsageError("--diti-config and --diti-checkpoint must be given together")
    if args.dpm_checkpoint is None and args.diti_checkpoint is None:
        raise _UsageError("--dpm-checkpoint is required unless --diti-checkpoint is given")
    models = convert_official(
        args.dpm_config,
        args.dpm_checkpoint,
        args.diti_config,
        args.diti_checkpoint,
        prefer_ema=not args.no_ema,
        image_size=args.image_size,
    )
    written = save_converted(models, args.output_dir, overwrite=args.overwrite)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------------- registry
# Further subcommands (demo, encode, swap, interpolate, edit, reconstruct, evaluate) go here as
# `_add_<name>_parser` functions. `diti-hf demo` is wired by the lead: add `_add_demo_parser` first in this tuple.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_convert_parser,)


def build_parser() -> argparse.ArgumentParser:
    """The `diti-hf` argument parser with every subcommand."""
    parser = _ArgumentParser(prog=PROG, description="DiTi: time-step-modular image representations, HF native.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.set_defaults(handler=None)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_parser in _SUBCOMMANDS:
        add_parser(subparsers)
    parser.set_defaults(command_names=sorted(subparsers.choices))
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Runs `diti-hf` with `argv` (default: `sys.argv[1:]`).

    Returns:
        `int`: The exit code: 0 on success, 2 for a usage or input error (one line on stderr, no traceback).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.handler is None:
            names = ", ".join(args.command_names)
            raise _UsageError(f"choose a command ({names}); see `{PROG} --help`")
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return args.handler(args)
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except (_UsageError, ValueError, TypeError, OSError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
