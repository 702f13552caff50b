"""Reading files that may be hostile, and guarding folders that long jobs write to.

Everything here is about inputs we did not write ourselves (shared checkpoints, downloaded pipelines, hand-edited
manifests): sizes are checked before anything is read or allocated, error messages never print an unbounded
value, content hashes detect files that changed after they were written, and a folder lock keeps two writers out of
one output folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# JSON/YAML configs, manifests and markers are a few KB; 16 MiB leaves room for long per-dim lists (latent_std,
# trained_betas) and refuses a sparse multi-GB file before it is read.
MAX_CONFIG_BYTES = 16 * 2**20
LOCK_NAME = ".lock"

_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxtuple, _short.maxdict = 2, 6, 6, 4
_short.maxstring, _short.maxother, _short.maxlong = 60, 60, 40


def short_repr(value: Any) -> str:
    """A `repr` of at most ~80 characters, whatever `value` holds (YAML aliases can expand to gigabytes)."""
    return _short.repr(value)


def check_file_size(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> int:
    """Raises `ValueError` naming `path` if it is larger than `max_bytes`; returns its size."""
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ValueError(f"{os.fspath(path)}: {size} bytes is more than a {what} may have ({max_bytes} bytes).")
    return size


def read_text(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    r"""
    Reads a UTF-8 text file of at most `max_bytes`.

    Args:
        path (`str` or `os.PathLike`): The file.
        what (`str`): What the file is, for the error message (e.g. `"pipeline index"`).
        max_bytes (`int`, defaults to `MAX_CONFIG_BYTES`): The size limit, checked before reading.

    Raises:
        `ValueError` naming the file if it is too large or not UTF-8; `OSError` if it cannot be read.
    """
    check_file_size(path, what, max_bytes)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since the check
    if len(data) > max_bytes:
        raise ValueError(f"{os.fspath(path)}: more than a {what} may have ({max_bytes} bytes).")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{os.fspath(path)}: a {what} must be UTF-8 text ({error.reason} at byte {error.start})."
        ) from None


def read_json(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """[`read_text`] then `json.loads`; a malformed or too deeply nested file is a `ValueError` naming it."""
    text = read_text(path, what, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)}: not valid JSON ({error.msg} at line {error.lineno}).") from None
    except RecursionError:
        raise ValueError(f"{os.fspath(path)}: JSON nested too deeply.") from None


def read_npy(path: str | os.PathLike, what: str, max_values: int) -> np.ndarray:
    r"""
    Reads a `.npy` array of at most `max_values` values, checking its header before anything is allocated: a file of
    a few bytes whose header claims 10¹² values is refused, not allocated, and no pickled object is ever read.

    Args:
        path (`str` or `os.PathLike`): The file.
        what (`str`): What the file is, the start of every message (e.g. `"the direction file 'w.npy'"`).
        max_values (`int`): The most values (elements) the array may hold.

    Returns:
        `np.ndarray`: The array, as `np.load` returns it.

    Raises:
        `ValueError`: One line starting with `what`: not a `.npy` file, an object (pickle) array, more than
            `max_values` values, or less data than the header claims. `OSError` if the file cannot be opened.
    """
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        try:
            version = npy.read_magic(f)
        except (ValueError, EOFError):
            raise ValueError(f"{what}: not a .npy array (no .npy header).") from None
        if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 field names of structured arrays
            raise ValueError(f"{what}: .npy format version {version[0]}.{version[1]} is not supported.")
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        try:
            shape, _, dtype = read_header(f)
        except (ValueError, EOFError):
            raise ValueError(f"{what}: not a .npy array (its header cannot be parsed).") from None
        if dtype.hasobject:
            raise ValueError(f"{what}: holds Python objects (a pickle); refused.")
        if any(n < 0 for n in shape):
            raise ValueError(f"{what}: its header claims a negative shape {short_repr(shape)}.")
        count = math.prod(shape)  # Python ints: a claimed 10¹² or 2⁶⁴ values cannot overflow here
        if count > max_values:
            raise ValueError(
                f"{what}: its header claims {count} values (shape {short_repr(shape)}), more than the {max_values} "
                "allowed; refused before reading."
            )
        held = os.fstat(f.fileno()).st_size - f.tell()
        if held < count * dtype.itemsize:
            raise ValueError(
                f"{what}: its header claims {count * dtype.itemsize} bytes of data, the file holds {held}."
            )
        f.seek(0)
        return npy.read_array(f, allow_pickle=False)


def read_vector(path: str | os.PathLike, what: str, dim: int) -> np.ndarray:
    r"""
    Reads a vector of `dim` real numbers from a `.npy` file through [`read_npy`] (header checked first); a `(1, dim)`
    or `(dim, 1)` array is accepted as the vector.

    Args:
        path (`str` or `os.PathLike`): The file.
        what (`str`): What the file is, the start of every message.
        dim (`int`): The length expected.

    Returns:
        `np.ndarray`: The `(dim,)` array, in its stored dtype.

    Raises:
        `ValueError`: One line starting with `what`: any of [`read_npy`]'s, values that are not real numbers, or
            another shape. The caller adds what the vector is for.
    """
    array = read_npy(path, what, max_values=dim)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what}: holds {array.dtype} values.")
    if array.shape != (dim,):
        raise ValueError(f"{what}: has shape {array.shape}.")
    return array


def sha256_file(path: str | os.PathLike, chunk_size: int = 2**20) -> str:
    """The hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """`{"size": bytes, "sha256": hex}` of a file, as recorded in manifests and completion markers."""
    return {"size": os.stat(path).st_size, "sha256": sha256_file(path)}


def record_problem(path: Path, record: Any, name: str | None = None) -> str | None:
    """
    Why the file at `path` does not match its `record` (from [`file_record`]), or `None` if it does. The size is
    compared first, so a truncated or replaced file is found without hashing it.
    """
    name = name or path.name
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return f"{name}: no valid content hash recorded"
    if not path.is_file():
        return f"{name}: missing"
    size = os.stat(path).st_size
    if size != record.get("size"):
        return f"{name}: {size} bytes, {short_repr(record.get('size'))} recorded"
    if sha256_file(path) != record["sha256"]:
        return f"{name}: content differs from its recorded SHA-256"
    return None


def check_dense_tensor(name: str, tensor: torch.Tensor, where: str) -> None:
    """
    Raises `ValueError` if `tensor` claims more elements than its storage holds (a zero or overlapping stride): such
    a tensor of a few bytes becomes gigabytes when copied, so it is refused before any reshape or clone.
    """
    needed = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes()
    if needed > held:
        raise ValueError(
            f"{where}: tensor {name!r} of shape {tuple(tensor.shape)} has only {held} bytes of data for its "
            f"{needed} bytes (zero or overlapping strides); refused."
        )


def check_finite_tensors(named: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    """
    One pass over `named` tensors: raises `ValueError` naming the first floating-point tensor with NaN or inf values
    (and how many it has), so that broken weights fail at load instead of giving black images.
    """
    for name, tensor in named:
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise ValueError(f"{where}: tensor {name!r} has {bad} NaN or infinite value(s) of {tensor.numel()}.")


class FolderInUseError(RuntimeError):
    """Another live process holds the lock of an output folder."""


def _is_same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class FolderLock:
    r"""
    An exclusive lock on `folder` (a `.lock` file holding the owner's PID, locked with `flock`): the kernel drops it
    when its process exits, even on kill -9, so a crashed writer never leaves the folder locked. Reentrant within one
    process. `release(remove=True)` also deletes the file, while still holding it; an acquirer that locked a file
    deleted meanwhile notices and locks the new one instead. Where `fcntl` does not exist (Windows) it locks nothing.

    Args:
        folder (`str` or `os.PathLike`): The folder (created if needed).
        what (`str`): What writes the folder, for the error message (e.g. `"feature extraction"`).

    Raises:
        [`FolderInUseError`] on [`acquire`] when another process holds the lock: `"<folder> is in use by PID <n>"`.
    """

    _held: dict[str, tuple[int, int]] = {}  # resolved folder → (fd, count) of this process

    def __init__(self, folder: str | os.PathLike, what: str):
        self.folder, self.what = Path(folder), what

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # no flock on this platform
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        if key in self._held:
            fd, count = self._held[key]
            self._held[key] = (fd, count + 1)
            return self
        path = self.folder / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise FolderInUseError(
                    f"{self.folder} is in use by PID {owner} (another {self.what}); wait for it to finish or use "
                    "another folder."
                ) from None
            if _is_same_file(fd, path):
                break
            os.close(fd)  # its owner deleted the file between our open and our flock: lock the current one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._held[key] = (fd, 1)
        return self

    def release(self, remove: bool = False) -> None:
        r"""
        Drops one hold of this process on the lock; the last one unlocks the folder. Does nothing when this process
        holds no lock on it.

        Args:
            remove (`bool`, defaults to `False`): Delete the `.lock` file when unlocking, so that a finished run leaves
                no file behind. Only ever the file this process holds locked is deleted.
        """
        key = str(self.folder.resolve())
        if key not in self._held:
            return
        fd, count = self._held[key]
        if count > 1:
            self._held[key] = (fd, count - 1)
            return
        del self._held[key]
        path = self.folder / LOCK_NAME
        if remove and _is_same_file(fd, path):  # deleted while locked: a waiting acquirer re-checks (see acquire)
            path.unlink(missing_ok=True)
        os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


__all__ = [
    "LOCK_NAME",
    "MAX_CONFIG_BYTES",
    "FolderInUseError",
    "FolderLock",
    "check_dense_tensor",
    "check_file_size",
    "check_finite_tensors",
    "file_record",
    "read_json",
    "read_npy",
    "read_vector",
    "read_text",
    "record_problem",
    "sha256_file",
    "short_repr",
]
