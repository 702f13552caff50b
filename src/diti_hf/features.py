"""Feature extraction to disk: `z` for many images, written in shards that survive a crash and resume exactly.

Layout of an output folder (see [`extract_features`]):

```
manifest.json            settings + the list of completed shards with their SHA-256 (rewritten after each shard)
shard-00000.npy          (rows, latent_dim) float32 features of input items [0, shard_size)
shard-00000.ids.json     their ids (and the items skipped as unreadable)
...
features.npy + features.json   (or features.parquet) the merged result, written when every shard is done
.lock                    held by the extraction writing the folder (the PID of its process)
```

Every file is written under a temporary name (`.tmp-<pid>-<name>`) and renamed with `os.replace` only once complete,
so a file named like a shard is always a whole shard. A shard counts as done only once the manifest lists it; the
manifest is the commit point of resumption. The manifest records the size and SHA-256 of every shard and of the
merged output: on resume a shard that changed since (flipped bytes, a shard copied over another) is recomputed, and
a damaged merged file is merged again; [`load_features`] refuses a merged file that does not match. Shard file names
are fixed by their index, so a manifest cannot point outside its folder.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._naming import option
from .data.images import BadImageError, open_image
from .safe_io import MAX_CONFIG_BYTES, FolderLock, file_record, read_json, record_problem, short_repr

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "diti_hf-features"
MANIFEST_VERSION = 2  # 1: no content hashes (its shards are checked by shape and for NaN only)
OUTPUT_FORMATS = ("npy", "parquet")
PARQUET_METADATA_KEY = b"diti_hf"
_TMP_PREFIX = ".tmp-"


def shard_name(index: int) -> str:
    """File name of shard `index` (`shard-00000.npy`)."""
    return f"shard-{index:05d}.npy"


def _ids_name(index: int) -> str:
    return f"shard-{index:05d}.ids.json"


def printable_name(name: str) -> str:
    r"""
    A file name as text that every output format stores: undecodable bytes of a non-UTF-8 name (which Python
    carries as lone surrogates, refused by Parquet and by strict UTF-8 output) become `\xNN` escapes.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_size_limit(rows: int) -> int:
    # ids and paths of every row: generous per row, but bounded before the file is read
    return MAX_CONFIG_BYTES + 4096 * max(0, rows)


# ---------------------------------------------------------------------------------------------------- metadata
def feature_metadata(pipe: Any, model: str | None = None) -> dict[str, Any]:
    r"""
    What a reader of saved features needs to interpret `z`: its width, the time-step partition (chunk end dims and
    the half-open time-step range of every chunk) and the model it came from.

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The pipeline (its encoder's partition is recorded).
        model (`str`, *optional*): The model's Hub id or folder.

    Returns:
        `dict`: JSON-serialisable metadata.
    """
    from . import __version__

    partition = pipe.partition
    return {
        "latent_dim": int(partition.latent_dim),
        "num_chunks": int(partition.num_chunks),
        "num_train_timesteps": int(partition.num_train_timesteps),
        "chunk_end_dims": [int(e) for e in partition.chunk_end_dims],
        "chunk_timesteps": [list(partition.chunk_timesteps(i)) for i in range(partition.num_chunks)],
        "partition": partition.to_dict(),
        "model": model,
        "diti_hf_version": __version__,
    }


# ---------------------------------------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    # makes the rename itself durable; not possible (nor needed) on every platform
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    r"""
    Writes `path` through a temporary file in the same folder, flushed and fsynced, then `os.replace`d: readers
    see either the old file or the complete new one, never a partial file under `path`'s name.

    Args:
        path (`str` or `os.PathLike`): Destination.
        write (`Callable`): Called with the open temporary file.
        binary (`bool`, defaults to `True`): Open the temporary file in binary mode.
    """
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda f: json.dump(payload, f, indent=1), binary=False)


def write_features(
    path: str | os.PathLike,
    features: np.ndarray,
    ids: Sequence[str],
    metadata: Mapping[str, Any],
    paths: Sequence[str] | None = None,
) -> list[Path]:
    r"""
    Writes features with their ids and metadata, atomically: `FILE.npy` with a JSON sidecar `FILE.json`, or
    `FILE.parquet` with columns `id`, `z` (fixed-size float32 lists) and optionally `path`, the metadata stored as
    JSON under the schema metadata key `diti_hf`.

    Args:
        path (`str` or `os.PathLike`): Output file, ending in `.npy` or `.parquet`.
        features (`np.ndarray`): `(N, latent_dim)` features.
        ids (`list[str]`): `N` ids.
        metadata (`dict`): See [`feature_metadata`].
        paths (`list[str]`, *optional*): `N` source file paths.

    Returns:
        `list[Path]`: The files written.
    """
    path = Path(path)
    fmt = _output_format(path)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise ValueError(f"`features` must be (N, d) with N = len(ids) = {len(ids)}, got shape {features.shape}.")
    if paths is not None and len(paths) != len(ids):
        raise ValueError(f"`paths` has {len(paths)} entries for {len(ids)} ids.")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**metadata, "num_features": int(features.shape[0])}
    if fmt == "npy":
        atomic_write(path, lambda f: np.save(f, features))
        sidecar = path.with_suffix(".json")
        _write_json(sidecar, {**meta, "features_file": path.name, "ids": list(ids), "paths": _list(paths)})
        return [path, sidecar]
    table = _parquet_table(features, ids, paths, meta)
    import pyarrow.parquet as pq

    atomic_write(path, lambda f: pq.write_table(table, f))
    return [path]


def _list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def _parquet_schema(dim: int, with_paths: bool, metadata: Mapping[str, Any]):
    import pyarrow as pa

    fields = [pa.field("id", pa.string()), pa.field("z", pa.list_(pa.float32(), dim))]
    if with_paths:
        fields.append(pa.field("path", pa.string()))
    return pa.schema(fields, metadata={PARQUET_METADATA_KEY: json.dumps(dict(metadata))})


def _parquet_table(features: np.ndarray, ids: Sequence[str], paths: Sequence[str] | None, metadata: Mapping):
    import pyarrow as pa

    dim = features.shape[1]
    z = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1), pa.float32()), dim)
    columns = [pa.array(list(ids), pa.string()), z]
    if paths is not None:
        columns.append(pa.array(list(paths), pa.string()))
    return pa.Table.from_arrays(columns, schema=_parquet_schema(dim, paths is not None, metadata))


def _load_rows(path: Path, rows: int | None = None, dim: int | None = None) -> np.ndarray:
    """
    A `.npy` file of float32 rows, memory-mapped: the header's shape is checked against the file's size before
    anything is allocated, and no pickled object is read.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({' '.join(str(error).split())}).") from None
    expected = (rows if rows is not None else "N", dim if dim is not None else "d")
    if (
        array.dtype != np.float32
        or array.ndim != 2
        or (rows is not None and array.shape[0] != rows)
        or (dim is not None and array.shape[1] != dim)
    ):
        raise ValueError(f"{path}: expected float32 rows of shape {expected}, got {array.dtype} {array.shape}.")
    return array


def _output_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"feature files must end in .npy or .parquet, got {str(path)!r}.")
    return suffix


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    r"""
    Reads features written by [`write_features`] or [`extract_features`].

    Args:
        path (`str` or `os.PathLike`): A `.npy` file (with its `.json` sidecar), a `.parquet` file, or an
            [`extract_features`] output folder (its merged file).

    Returns:
        `(features, metadata)`: `(N, latent_dim)` float32 array and the metadata, with `ids` (and `paths`).

    Raises:
        `ValueError` naming the file if a folder's merged output does not match the hash in its manifest, or a file
        is not a 2-d float32 array with its sidecar.
    """
    path = Path(path)
    if path.is_dir():
        manifest = _read_manifest(path)
        if manifest is None or not manifest.get("complete"):
            raise ValueError(f"{str(path)!r} holds no completed feature extraction (see its {MANIFEST_NAME}).")
        problem = _output_problem(path, manifest)
        if problem:
            raise ValueError(
                f"{path / MANIFEST_NAME}: the merged output does not verify ({problem}); resume the "
                "extraction (`--resume` on the command line, `resume=True` in Python) to merge it again."
            )
        path = path / manifest["output"]
    fmt = _output_format(path)
    if fmt == "npy":
        features = np.array(_load_rows(path))
        sidecar = path.with_suffix(".json")
        metadata = {}
        if sidecar.is_file():
            metadata = read_json(sidecar, "features sidecar", _json_size_limit(features.shape[0]))
        return features, metadata
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(PARQUET_METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    dim = table.schema.field("z").type.list_size
    features = table.column("z").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    metadata["ids"] = table.column("id").to_pylist()
    metadata["paths"] = table.column("path").to_pylist() if "path" in table.column_names else None
    return features, metadata


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class _Item:
    index: int
    id: str
    image: Any = None  # decoded image or tensor
    error: str | None = None
    path: str | None = None


def _decode(index: int, item_id: str, value: Any, root: Path | None = None) -> _Item:
    path = None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        shown = printable_name(path)
        if root is not None and not Path(path).resolve().is_relative_to(root):
            target = printable_name(str(Path(path).resolve()))
            return _Item(index, item_id, error=f"it resolves to {target!r}, outside {str(root)!r}", path=shown)
        try:
            value = open_image(path, "the file")
        except BadImageError as error:  # reported by the caller, with the item's index
            return _Item(index, item_id, error=printable_name(str(error)), path=shown)
        path = shown
    return _Item(index, item_id, image=value, path=path)


def _iter_items(
    images: Any, start: int, image_column: str | None, ids: Sequence[str] | None, root: Path | None = None
) -> Iterator[_Item]:
    """Yields every input item from index `start` on, decoded (or with the decoding error)."""
    import datasets

    def item_id(index: int, default: str) -> str:
        return printable_name(str(ids[index]) if ids is not None else default)

    if isinstance(images, datasets.Dataset):
        from .data.images import decode_image
        from .data.loading import resolve_image_column

        column = resolve_image_column(images, image_column)
        raw = images.select_columns([column])
        if isinstance(raw.features[column], datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))  # decode ourselves, to report bad ones
        for lo in range(start, len(raw), 256):
            for offset, value in enumerate(raw[lo : lo + 256][column]):
                index = lo + offset
                path = value.get("path") if isinstance(value, dict) else None
                path = printable_name(path) if isinstance(path, str) else None
                try:
                    yield _Item(index, item_id(index, str(index)), image=decode_image(value, index, column), path=path)
                except BadImageError as error:
                    yield _Item(index, item_id(index, str(index)), error=str(error), path=path)
        return
    if isinstance(images, datasets.IterableDataset):
        column = image_column or "image"
        for index, example in enumerate(images.skip(start), start):
            yield _decode(index, item_id(index, str(index)), example[column], root)
        return
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"a tensor of images must be (N, C, H, W), got shape {tuple(images.shape)}.")
        for index in range(start, images.shape[0]):
            yield _Item(index, item_id(index, str(index)), image=images[index])
        return
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    iterator = iter(images)
    for index, value in enumerate(itertools.islice(iterator, start, None), start):
        default = os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(index)
        yield _decode(index, item_id(index, default), value, root)


def _num_items(images: Any) -> int | None:
    import datasets

    if isinstance(images, datasets.IterableDataset):
        return None
    try:
        return len(images)
    except TypeError:
        return None


# ---------------------------------------------------------------------------------------------------- encoding
def _preprocess(pipe: Any, item: _Item) -> torch.Tensor | None:
    try:
        return pipe.preprocess(item.image)
    except (TypeError, ValueError) as error:
        item.error = f"{type(error).__name__}: {error}"
        return None


def _bad_item(item: _Item, skip: bool) -> None:
    where = f"image {item.index} ({item.path or item.id!r})"
    if not skip:
        raise BadImageError(
            f"{where} could not be read: {item.error} Fix or remove it, or pass {option('skip_bad_images')} to "
            "skip unreadable images (each one is reported)."
        )
    logger.warning("skipping unreadable %s: %s", where, item.error)


def _encode_items(
    pipe: Any, items: Iterable[_Item], batch_size: int, skip_bad_images: bool, on_item: Callable[[], None] | None
) -> tuple[np.ndarray, list[tuple[str, str | None]], list[dict[str, Any]]]:
    """
    Encodes `items` in batches of `batch_size` readable images, holding only the current batch (preprocessed) in
    memory. Returns the features, `(id, path)` of the kept items and the skipped items.
    """
    kept: list[tuple[str, str | None]] = []
    skipped: list[dict[str, Any]] = []
    features: list[np.ndarray] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            z = pipe.encode(torch.cat(batch)).z.detach().float().cpu().numpy()
            finite = np.isfinite(z).all(axis=1)
            if not finite.all():  # the inputs are finite and in [-1, 1]: the encoder itself is broken
                first = len(kept) - len(batch) + int(np.argmin(finite))
                raise ValueError(
                    f"the encoder returned NaN or infinite features for {int((~finite).sum())} of {len(batch)} "
                    f"images (the first: {kept[first][1] or kept[first][0]!r}); check the model's weights. Nothing "
                    "was written for this shard."
                )
            features.append(z)
            batch.clear()

    for item in items:
        pixels = None if item.error is not None else _preprocess(pipe, item)
        if pixels is None:
            _bad_item(item, skip_bad_images)
            skipped.append({"index": item.index, "id": item.id, "path": item.path, "error": item.error})
        else:
            batch.append(pixels)
            kept.append((item.id, item.path))
            if len(batch) == batch_size:
                flush()
        if on_item is not None:
            on_item()
    flush()
    d = int(pipe.partition.latent_dim)
    return (np.concatenate(features) if features else np.zeros((0, d), np.float32)), kept, skipped


def encode_images(
    pipe: Any,
    images: Any,
    batch_size: int = 64,
    image_column: str | None = None,
    ids: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[str], list[str | None], list[dict[str, Any]]]:
    r"""
    Encodes every image of `images` in memory (see [`extract_features`] for the accepted inputs and `root`).

    Returns:
        `(features, ids, paths, skipped)`: `(N, latent_dim)` float32 features of the readable images, their ids and
        source paths (`None` when not read from a file), and the skipped items.
    """
    _check_positive(batch_size, "batch_size")
    from tqdm.auto import tqdm

    bar = tqdm(total=_num_items(images), desc="encoding", unit="img", disable=not progress)
    try:
        items = _iter_items(images, 0, image_column, ids, _resolved(root))
        features, kept, skipped = _encode_items(pipe, items, batch_size, skip_bad_images, bar.update)
    finally:
        bar.close()
    return features, [k[0] for k in kept], [k[1] for k in kept], skipped


def _resolved(root: str | os.PathLike | None) -> Path | None:
    return None if root is None else Path(root).resolve()


def _check_positive(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


# ---------------------------------------------------------------------------------------------------- sharded
@dataclass
class FeatureExtractionOutput:
    r"""
    Args:
        output (`Path`): The merged features file (`features.npy` or `features.parquet`).
        num_features (`int`): Rows written (readable images).
        num_shards (`int`): Shards of the extraction.
        resumed_shards (`int`): Shards found complete and skipped by this call.
        skipped (`list[dict]`): Unreadable items skipped (`index`, `id`, `path`, `error`).
    """

    output: Path
    num_features: int
    num_shards: int
    resumed_shards: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _read_manifest(output_dir: Path) -> dict[str, Any] | None:
    """The folder's manifest, checked for the structure resumption relies on; `None` if there is none."""
    path = output_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = read_json(path, "feature manifest")  # atomic writes cannot leave a bad file; a hand-edited one can
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{str(path)!r} is not a diti_hf feature manifest.")
    problems = []
    if manifest.get("version") not in (1, MANIFEST_VERSION):
        problems.append(f"unknown version {short_repr(manifest.get('version'))}")
    if not isinstance(manifest.get("settings"), dict):
        problems.append("`settings` is not an object")
    if not isinstance(manifest.get("shards"), list):
        problems.append("`shards` is not a list")
    if not isinstance(manifest.get("complete"), bool):
        problems.append("`complete` is not true or false")
    if problems:
        raise ValueError(
            f"{str(path)!r} is malformed ({'; '.join(problems)}); delete the folder (or its manifest) to start over."
        )
    return manifest


_ENTRY_FIELDS = {"file": str, "ids_file": str, "start": int, "stop": int, "rows": int, "skipped": list}


def _shard_problem(output_dir: Path, index: int, entry: Any, dim: int, shard_size: int) -> str | None:
    """Why the `index`-th manifest entry is not a complete, unchanged shard; `None` if it is."""
    if not isinstance(entry, dict):
        return f"entry {index} of {MANIFEST_NAME} is not an object"
    wrong = [
        k for k, kind in _ENTRY_FIELDS.items() if not isinstance(entry.get(k), kind) or isinstance(entry[k], bool)
    ]
    if wrong:
        return f"entry {index} of {MANIFEST_NAME} lacks valid {wrong}"
    if entry["file"] != shard_name(index) or entry["ids_file"] != _ids_name(index):  # also keeps it in the folder
        return f"entry {index} of {MANIFEST_NAME} names {short_repr(entry['file'])}, expected {shard_name(index)!r}"
    if entry["start"] != index * shard_size or not 0 <= entry["rows"] <= entry["stop"] - entry["start"] <= shard_size:
        return f"entry {index} of {MANIFEST_NAME} has inconsistent start/stop/rows"
    shard, ids_file = output_dir / entry["file"], output_dir / entry["ids_file"]
    skipped_ok = all(isinstance(s, dict) and {"index", "id", "path", "error"} <= set(s) for s in entry["skipped"])
    if not skipped_ok or len(entry["skipped"]) != entry["stop"] - entry["start"] - entry["rows"]:
        return f"entry {index} of {MANIFEST_NAME} has a malformed list of skipped images"
    hashed = "file_record" in entry or "ids_record" in entry
    if hashed:  # the size is compared first: a truncated or replaced file costs no hashing
        for path, record in ((shard, entry.get("file_record")), (ids_file, entry.get("ids_record"))):
            problem = record_problem(path, record)
            if problem:
                return problem
    try:
        array = _load_rows(shard, entry["rows"], dim)
        listed = read_json(ids_file, "shard id list", _json_size_limit(entry["rows"]))
    except (OSError, ValueError) as error:
        return " ".join(str(error).split())
    if (
        not isinstance(listed, dict)
        or not all(isinstance(listed.get(key), list) and len(listed[key]) == entry["rows"] for key in ("ids", "paths"))
        or not all(isinstance(i, str) for i in listed["ids"])
        or not all(p is None or isinstance(p, str) for p in listed["paths"])
    ):
        return f"{ids_file.name}: not {entry['rows']} ids and paths"
    if not hashed and not np.isfinite(array).all():  # a version-1 manifest: no hash, so at least no NaN rows
        return f"{shard.name}: holds NaN or infinite values"
    return None


def _output_problem(output_dir: Path, manifest: Mapping[str, Any]) -> str | None:
    """Why a complete extraction's merged output is missing or changed; `None` if it matches the manifest."""
    output = manifest.get("output")
    if output not in ("features.npy", "features.parquet"):
        return f"{MANIFEST_NAME} names the output {short_repr(output)}"
    records = manifest.get("output_files")
    if not isinstance(records, dict):  # a version-1 manifest records no hash
        return None if (output_dir / output).is_file() else f"{output}: missing"
    if output not in records or set(records) - {"features.npy", "features.json", "features.parquet"}:
        return f"{MANIFEST_NAME} lists the output files {short_repr(sorted(records))}"
    for name, record in records.items():
        problem = record_problem(output_dir / name, record)
        if problem:
            return problem
    return None


def _settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    # the merged file's format may change on resume: the shards do not depend on it
    return [
        f"{key}: {short_repr(old.get(key))} → {short_repr(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if key != "output_format" and old.get(key) != new.get(key)
    ]


def extract_features(
    pipe: Any,
    images: Any,
    output_dir: str | os.PathLike,
    shard_size: int = 4096,
    resume: bool = False,
    batch_size: int = 64,
    image_column: str | None = None,
    ids: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    output_format: str = "npy",
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> FeatureExtractionOutput:
    r"""
    Encodes `images` into `z` and writes them to `output_dir` shard by shard, resumable after a crash.

    Shard `k` holds the features of input items `[k·shard_size, (k+1)·shard_size)` (fewer rows if some were skipped
    as unreadable). Each shard is encoded in batches of `batch_size` starting at its first item, so an interrupted
    and resumed run computes exactly the batches of an uninterrupted one and gives identical features. Shard files and
    the manifest are written atomically (temporary file + `os.replace`); the manifest, rewritten after each shard,
    lists the completed ones with their SHA-256. With `resume=True` the shards it lists are skipped if their files
    still match; from the first one that does not, shards are recomputed. When every shard is done the merged
    `features.npy` + `features.json` (or `features.parquet`) is written and its hash recorded. The folder is locked
    while this runs: a second extraction into it fails with `"... is in use by PID <n>"`.

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The pipeline whose encoder computes `z`.
        images: A `datasets.Dataset` (its image column), a `datasets.IterableDataset`, an `(N, C, H, W)` tensor in
            [−1, 1], or a sequence/iterable of image file paths, PIL images or numpy arrays.
        output_dir (`str` or `os.PathLike`): The output folder (created if needed).
        shard_size (`int`, defaults to 4096): Input items per shard.
        resume (`bool`, defaults to `False`): Continue the extraction recorded in `output_dir`. Without it, a folder
            that already holds a manifest is refused rather than overwritten.
        batch_size (`int`, defaults to 64): Encoding batch size.
        image_column (`str`, *optional*): The image column of a dataset (default `"image"` or the only one).
        ids (`list[str]`, *optional*): One id per input item; default the file path, else the item's index.
        skip_bad_images (`bool`, defaults to `False`): Skip unreadable images (each reported, and listed in the
            output) instead of raising [`~diti_hf.data.BadImageError`] naming the item's index and file.
        output_format (`str`, defaults to `"npy"`): `"npy"` or `"parquet"` for the merged file; it may differ from
            the recorded one on resume (the shards are merged again).
        metadata (`dict`, *optional*): Recorded in the output (e.g. from [`feature_metadata`] plus the source);
            on resume it must equal the recorded one.
        progress (`bool`, defaults to `True`): Show a progress bar.
        root (`str` or `os.PathLike`, *optional*): For image files: the folder they must lie in. A file that
            resolves outside it (a symbolic link pointing elsewhere) is a bad image like an unreadable one.

    Returns:
        [`FeatureExtractionOutput`]

    Examples:
    ```py
    >>> from diti_hf import DiTiPipeline
    >>> from diti_hf.data import generate_shapes
    >>> from diti_hf.features import extract_features, feature_metadata, load_features
    >>> pipe = DiTiPipeline.from_pretrained("path/or/hub-id")
    >>> out = extract_features(pipe, generate_shapes(10_000), "features/", shard_size=2048,
    ...                        metadata=feature_metadata(pipe, "path/or/hub-id"))
    >>> z, meta = load_features("features/")   # resume after a crash with resume=True
    ```
    """
    _check_positive(shard_size, "shard_size")
    _check_positive(batch_size, "batch_size")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"`output_format` must be one of {OUTPUT_FORMATS}, got {output_format!r}.")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`output_dir` {str(out)!r} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    num_items = _num_items(images)
    if ids is not None and num_items is not None and len(ids) != num_items:
        raise ValueError(f"`ids` has {len(ids)} entries for {num_items} images.")
    with FolderLock(out, "feature extraction"):
        return _extract(
            pipe, images, out, shard_size, resume, batch_size, image_column, ids, skip_bad_images, output_format,
            metadata, progress, _resolved(root), num_items,
        )  # fmt: skip


def _extract(
    pipe: Any,
    images: Any,
    out: Path,
    shard_size: int,
    resume: bool,
    batch_size: int,
    image_column: str | None,
    ids: Sequence[str] | None,
    skip_bad_images: bool,
    output_format: str,
    metadata: Mapping[str, Any] | None,
    progress: bool,
    root: Path | None,
    num_items: int | None,
) -> FeatureExtractionOutput:
    """[`extract_features`] once its folder is locked: the manifest, the missing shards, the merged output."""
    dim = int(pipe.partition.latent_dim)
    metadata = dict(metadata) if metadata is not None else feature_metadata(pipe)
    settings = {
        "shard_size": shard_size,
        "num_items": num_items,
        "latent_dim": dim,
        "output_format": output_format,
        "metadata": json.loads(json.dumps(metadata)),  # as it reads back from JSON, for the resume comparison
    }
    manifest, same_format = _start_manifest(out, settings, resume)
    resumed = len(manifest["shards"])
    was_complete = manifest["complete"] and resumed == manifest.get("num_shards")
    if was_complete:
        problem = _output_problem(out, manifest) if same_format else None
        if same_format and problem is None:
            return _extraction_output(out / manifest["output"], manifest, resumed)
        if problem is not None:
            logger.warning(
                "%s: every shard is complete but the merged output is not (%s); merging again", out, problem
            )
    else:
        manifest["complete"] = False
        manifest.update(version=MANIFEST_VERSION, output=None, output_files=None)
        _write_json(out / MANIFEST_NAME, manifest)
        manifest["run"] = {"batch_size": batch_size, "skip_bad_images": skip_bad_images}  # informative only
        items = _iter_items(images, resumed * shard_size, image_column, ids, root)
        _write_shards(pipe, items, out, manifest, shard_size, batch_size, skip_bad_images, progress, num_items)

    written = _merge(out, manifest, metadata, output_format, dim)
    manifest.update(
        version=MANIFEST_VERSION,
        complete=True,
        num_shards=len(manifest["shards"]),
        output=written[0].name,
        output_files={p.name: file_record(p) for p in written},
    )
    _write_json(out / MANIFEST_NAME, manifest)
    return _extraction_output(written[0], manifest, resumed)


def _start_manifest(out: Path, settings: dict[str, Any], resume: bool) -> tuple[dict[str, Any], bool]:
    r"""
    The manifest to continue: a new one, or the recorded one (same settings required) cut at its first damaged
    shard. Returns it and whether its recorded output format is the one asked for.
    """
    manifest = _read_manifest(out)
    if manifest is not None and not resume:
        raise ValueError(
            f"{str(out)!r} already holds a feature extraction ({MANIFEST_NAME}); continue it with "
            f"`{option('resume')}`, or choose another folder."
        )
    if manifest is not None:
        diff = _settings_diff(manifest["settings"], settings)
        if diff:
            raise ValueError(
                f"cannot resume {str(out)!r}: the settings differ from the recorded run ({'; '.join(diff)})."
            )
    # leftovers of a killed writer (the lock says no other writer is alive); never named like a shard, so they
    # were never mistaken for one
    for stale in out.glob(f"{_TMP_PREFIX}*"):
        stale.unlink(missing_ok=True)
    if manifest is None:
        return {"format": MANIFEST_FORMAT, "settings": settings, "shards": [], "complete": False, "output": None}, True
    same_format = manifest["settings"].get("output_format") == settings["output_format"]
    manifest["settings"] = settings
    done = []
    for index, entry in enumerate(manifest["shards"]):
        problem = _shard_problem(out, index, entry, settings["latent_dim"], settings["shard_size"])
        if problem:
            logger.warning("%s: %s; recomputing from shard %d on", out, problem, index)
            break
        done.append(entry)
    if len(done) < len(manifest["shards"]):
        manifest["complete"] = False
    manifest["shards"] = done
    return manifest, same_format


def _write_shards(
    pipe: Any, items: Iterator[_Item], out: Path, manifest: dict[str, Any], shard_size: int, batch_size: int,
    skip_bad_images: bool, progress: bool, num_items: int | None,
) -> None:  # fmt: skip
    """Encodes `items` shard by shard; each shard is committed to the manifest once its files are written."""
    from tqdm.auto import tqdm

    start = len(manifest["shards"]) * shard_size
    bar = tqdm(
        total=num_items, initial=min(start, num_items or start), desc="encoding", unit="img", disable=not progress
    )
    shard = len(manifest["shards"])
    try:
        while True:
            indices: list[int] = []
            # streamed: a shard's images are decoded batch by batch, never all held at once
            features, kept, skipped = _encode_items(
                pipe, _recording(itertools.islice(items, shard_size), indices), batch_size, skip_bad_images, bar.update
            )
            if not indices:
                break
            entry = {
                "file": shard_name(shard),
                "ids_file": _ids_name(shard),
                "start": indices[0],
                "stop": indices[-1] + 1,
                "rows": int(features.shape[0]),
                "skipped": skipped,
            }
            _write_json(out / entry["ids_file"], {"ids": [k[0] for k in kept], "paths": [k[1] for k in kept]})
            atomic_write(out / entry["file"], lambda f, a=features: np.save(f, a))
            entry.update(file_record=file_record(out / entry["file"]), ids_record=file_record(out / entry["ids_file"]))
            manifest["shards"].append(entry)
            _write_json(out / MANIFEST_NAME, manifest)  # the commit point: from now on the shard counts as done
            shard += 1
            if len(indices) < shard_size:
                break
    except BadImageError as error:
        raise BadImageError(
            f"{error} The {len(manifest['shards'])} completed shard(s) in {str(out)!r} are kept: continue with "
            "`--resume` (Python: `resume=True`)."
        ) from error
    finally:
        bar.close()


def _extraction_output(output: Path, manifest: Mapping[str, Any], resumed: int) -> FeatureExtractionOutput:
    return FeatureExtractionOutput(
        output=output,
        num_features=sum(e["rows"] for e in manifest["shards"]),
        num_shards=len(manifest["shards"]),
        resumed_shards=resumed,
        skipped=[s for e in manifest["shards"] for s in e["skipped"]],
    )


def _recording(items: Iterable[_Item], indices: list[int]) -> Iterator[_Item]:
    """Passes `items` through, appending each one's index to `indices`."""
    for item in items:
        indices.append(item.index)
        yield item


def _merge(
    out: Path, manifest: Mapping[str, Any], metadata: Mapping[str, Any], output_format: str, dim: int
) -> list[Path]:
    """Concatenates the (verified) shards into the final file(s) without holding them all in memory."""
    entries = manifest["shards"]
    ids: list[str] = []
    paths: list[str | None] = []
    for entry in entries:
        shard_ids = read_json(out / entry["ids_file"], "shard id list", _json_size_limit(entry["rows"]))
        ids += shard_ids["ids"]
        paths += shard_ids["paths"]
    has_paths = bool(paths) and all(p is not None for p in paths)
    meta = {
        **metadata,
        "num_features": len(ids),
        "skipped": [s for e in entries for s in e["skipped"]],
        "num_shards": len(entries),
    }
    if output_format == "npy":
        path = out / "features.npy"

        def write_npy(f) -> None:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (len(ids), dim)})
            for entry in entries:
                f.write(np.ascontiguousarray(_load_rows(out / entry["file"], entry["rows"], dim)).tobytes())

        atomic_write(path, write_npy)
        sidecar = path.with_suffix(".json")
        _write_json(sidecar, {**meta, "features_file": path.name, "ids": ids, "paths": paths if has_paths else None})
        return [path, sidecar]

    import pyarrow.parquet as pq

    path = out / "features.parquet"
    schema = _parquet_schema(dim, has_paths, meta)

    def write_parquet(f) -> None:
        offset = 0
        with pq.ParquetWriter(f, schema) as writer:
            for entry in entries:
                rows = entry["rows"]
                table = _parquet_table(
                    np.asarray(_load_rows(out / entry["file"], rows, dim)),
                    ids[offset : offset + rows],
                    paths[offset : offset + rows] if has_paths else None,
                    meta,
                )
                writer.write_table(table)  # one row group per shard
                offset += rows

    atomic_write(path, write_parquet)
    return [path]


__all__ = [
    "FeatureExtractionOutput",
    "atomic_write",
    "encode_images",
    "extract_features",
    "feature_metadata",
    "load_features",
    "printable_name",
    "shard_name",
    "write_features",
]
