"""The on-disk format of extracted features: single files, the shards of an extraction, its manifest, and their checks.

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

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..safe_io import MAX_CONFIG_BYTES, file_record, read_json, record_problem, short_repr

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "diti_hf-features"
MANIFEST_VERSION = 2  # 1: no content hashes (its shards are checked by shape and for NaN only)
OUTPUT_FORMATS = ("npy", "parquet")
PARQUET_METADATA_KEY = b"diti_hf"
_TMP_PREFIX = ".tmp-"


def shard_name(index: int) -> str:
    """File name of shard `index` (`shard-00000.npy`)."""
    return f"shard-{index:05d}.npy"


def _shard_ids_name(index: int) -> str:
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
        _write_json(sidecar, {**meta, "features_file": path.name, "ids": list(ids), "paths": _optional_list(paths)})
        return [path, sidecar]
    table = _parquet_table(features, ids, paths, meta)
    import pyarrow.parquet as pq

    atomic_write(path, lambda f: pq.write_table(table, f))
    return [path]


def _optional_list(values: Sequence[str] | None) -> list[str] | None:
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


# ---------------------------------------------------------------------------------------------------- shards
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
    if entry["file"] != shard_name(index) or entry["ids_file"] != _shard_ids_name(
        index
    ):  # also keeps it in the folder
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


def _write_shard(
    output_dir: Path,
    index: int,
    indices: Sequence[int],
    features: np.ndarray,
    kept: Sequence[tuple[str, str | None]],
    skipped: list[dict[str, Any]],
) -> dict[str, Any]:
    """
    Writes shard `index` (its features and the ids and paths of its kept items) and returns its manifest entry: the
    shard is done only once the caller has written that entry to the manifest.
    """
    entry = {
        "file": shard_name(index),
        "ids_file": _shard_ids_name(index),
        "start": indices[0],
        "stop": indices[-1] + 1,
        "rows": int(features.shape[0]),
        "skipped": skipped,
    }
    _write_json(output_dir / entry["ids_file"], {"ids": [k[0] for k in kept], "paths": [k[1] for k in kept]})
    atomic_write(output_dir / entry["file"], lambda f: np.save(f, features))
    entry.update(
        file_record=file_record(output_dir / entry["file"]), ids_record=file_record(output_dir / entry["ids_file"])
    )
    return entry


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
