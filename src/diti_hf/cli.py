"""The `diti-hf` command line: `demo`, `app`, `encode`, `reconstruct`, `swap`, `interpolate`, `edit`, `evaluate`,
`partition`, `convert`, `export`.

This module builds the parser and runs a command; the commands themselves are the modules of `diti_hf.commands`
(one per subcommand, each with `add_parser(subparsers)` and `run(args) -> int`). The model commands share `--model`
(Hub id or pipeline folder), `--device`, `--batch-size`, `--steps` (DDIM), `--seed` and `--threads`; the image
commands write PNG grids (`diti_hf.visualization`), `encode` writes features through `diti_hf.features`.
Expected failures (command-line mistakes, bad inputs and files: `ValueError`, `TypeError`, `OSError`, a folder in use,
running out of memory) are reported as one line `diti-hf: error: ...` with exit code 2; anything else (a bug) as one
line with exit code 1 that says to run with `--debug` for the traceback.

Nothing here imports torch or diffusers: `main` builds the parser of the chosen command only (the others are listed by
their help line, `diti_hf.commands.COMMANDS`), so `--help`, `--version` and `COMMAND --help` answer at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Collection, Sequence

from . import __version__
from ._naming import naming_flags
from .commands import COMMANDS, command_module
from .commands._common import PROG, UsageError, one_line, seed_everything, set_threads
from .commands.evaluate import _evaluation_line
from .cpu_memory import reuse_freed_memory
from .warning_types import ChunkWideningWarning, ImageResizeWarning


class _ArgumentParser(argparse.ArgumentParser):
    # argparse prints the whole usage block and exits; we want one line and a return code (tests call `main`).
    def error(self, message: str) -> None:
        raise UsageError(message)


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """
    The `diti-hf` argument parser.

    Args:
        commands (`Collection[str]`, *optional*): The commands whose own parsers (flags, imports) are built; the others
            are listed by name and help line only. Default: every command.
    """
    parser = _ArgumentParser(prog=PROG, description="DiTi: time-step-modular image representations, HF native.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.set_defaults(handler=None)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, help in COMMANDS.items():
        if commands is None or name in commands:
            command_module(name).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=help, add_help=False)
    parser.set_defaults(command_names=sorted(subparsers.choices))
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    # the options before the command take no value, so the command is the first word that is not an option
    return next((word for word in argv if not word.startswith("-")), None)


def _expected_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (UsageError, ValueError, TypeError, OSError)
    safe_io = sys.modules.get("diti_hf.safe_io")  # a folder lock can only be held once safe_io is loaded
    return errors + ((safe_io.FolderInUseError,) if safe_io is not None else ())


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Runs `diti-hf` with `argv` (default: `sys.argv[1:]`).

    Returns:
        `int`: The exit code: 0 on success, 2 for a usage or input error (one line on stderr, no traceback), 1 for an
        unexpected error (one line, or its traceback with `--debug`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        parser = build_parser([_chosen_command(argv)])
        args = parser.parse_args(argv)
        if args.handler is None:
            names = ", ".join(args.command_names)
            raise UsageError(f"choose a command ({names}); see `{PROG} --help`")
        if getattr(args, "seed", None) is not None:
            seed_everything(args.seed)
        reuse_freed_memory()  # CPU inference: no page faults for every new activation tensor (diti_hf.cpu_memory)
        if hasattr(args, "threads"):
            set_threads(args.threads)
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            # the commands say these in terms of their own flags (check_ranges, read_for_model)
            warnings.simplefilter("ignore", ChunkWideningWarning)
            warnings.simplefilter("ignore", ImageResizeWarning)
            with naming_flags():  # the library's messages name the flags, not the Python keywords
                return args.handler(args)
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except MemoryError as error:
        print(f"{PROG}: error: out of memory ({one_line(error)}); try a smaller --batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, _expected_errors()):
            print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
            return 2
        if getattr(args, "debug", False):  # a bug: one line unless asked for the traceback
            raise
        print(
            f"{PROG}: error: unexpected {type(error).__name__}: {one_line(error)[:500]} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


# `PROG`, `build_parser` and `main` are the entry points; `_evaluation_line` is imported from here by the tests.
__all__ = ["PROG", "_evaluation_line", "build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
