"""How messages name an option: the Python keyword in the library (`skip_bad_images=True`), the flag under the
`diti-hf` command line (`--skip-bad-images`), which sets the style for the run of a command ([`naming_flags`]).

The message is written once, with [`option`] where it names an option, and reads right in both places.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_STYLE: ContextVar[str] = ContextVar("diti_hf_option_style", default="python")


def option(name: str, value: Any = True) -> str:
    """
    `name` as the reader passes it: `name=value` (Python), or `--name-with-dashes` (`--name value` unless `value`
    is `True`) under [`naming_flags`].
    """
    if _STYLE.get() == "flags":
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {value}"
    return f"{name}={value!r}"


@contextlib.contextmanager
def naming_flags() -> Iterator[None]:
    """Within it, [`option`] names command-line flags (the `diti-hf` commands run in it)."""
    token = _STYLE.set("flags")
    try:
        yield
    finally:
        _STYLE.reset(token)


__all__ = ["naming_flags", "option"]
