"""The extraction job: images → `z`, in memory ([`encode_images`]) or shard by shard into a folder that a crashed run
resumes exactly ([`extract_features`]). The folder's format and its checks are [`~diti_hf.features.store`]'s."""

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

from .._naming import option
from ..data.images import BadImageError, decode_image, open_image
from ..data.loading import resolve_image_column
from ..safe_io import FolderLock, file_record, short_repr

# the private names are the folder format's internals, which only the extraction job shares
from .store import (
    _TMP_PREFIX,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    OUTPUT_FORMATS,
    _merge,
    _output_problem,
    _read_manifest,
    _shard_problem,
    _write_json,
    _write_shard,
    feature_metadata,
    printable_name,
)

logger = logging.getLogger(__name__)


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
                pipe,
                _noting_indices(itertools.islice(items, shard_size), indices),
                batch_size,
                skip_bad_images,
                bar.update,
            )
            if not indices:
                break
            manifest["shards"].append(_write_shard(out, shard, indices, features, kept, skipped))
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


def _noting_indices(items: Iterable[_Item], indices: list[int]) -> Iterator[_Item]:
    """Passes `items` through, appending each one's index to `indices`."""
    for item in items:
        indices.append(item.index)
        yield item
