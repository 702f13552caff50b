"""Strict weight loading: diffusers' `from_pretrained` fills missing weights randomly with only a log warning, and
loads NaN weights without a word."""

from __future__ import annotations

import os
from typing import Any

from safetensors import safe_open
from torch import nn

from ..safe_io import check_finite_tensors, read_json


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")


def raise_on_key_mismatch(
    name: str, missing: list[str], unexpected: list[str], mismatched: list | None = None
) -> None:
    """Raises `ValueError` naming every missing, unexpected or wrongly shaped key of the weights of `name`."""
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(sorted(unexpected))}")
    if mismatched:
        problems.append(f"keys with the wrong shape: {_listing([str(m) for m in mismatched])}")
    if problems:
        raise ValueError(f"Weights of {name} do not match the model; " + "; ".join(problems) + ".")


def check_finite_weights(model: nn.Module, where: str) -> None:
    """One pass over `model`'s weights and buffers: raises `ValueError` naming the first tensor with NaN or inf."""
    check_finite_tensors(model.state_dict().items(), f"weights of {where}")


class StrictLoadingMixin:
    """
    For `ModelMixin` subclasses: `from_pretrained` raises instead of initialising missing weights at random, and
    refuses non-finite weights.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        where = os.fspath(pretrained_model_name_or_path)
        if kwargs.get("subfolder"):
            where = f"{where} (subfolder {kwargs['subfolder']!r})"
        raise_on_key_mismatch(
            f"{cls.__name__} at {where}", info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]
        )
        check_finite_weights(model, f"{cls.__name__} at {where}")
        return (model, info) if want_info else model


def check_saved_weights(model: nn.Module, folder: str | os.PathLike) -> None:
    """
    Compares the tensor names in a saved component folder's safetensors file(s) (headers only) with `model`'s
    state dict; raises `ValueError` naming the folder and the offending keys. Used for components whose class we do
    not own (the frozen `UNet2DModel`).
    """
    folder = os.fspath(folder)
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    index = [f for f in os.listdir(folder) if f.endswith(".safetensors.index.json")]
    if index:
        listing = read_json(os.path.join(folder, index[0]), "weight index")
        weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and os.path.basename(v) == v for v in weight_map.values()
        ):
            raise ValueError(f"{folder}/{index[0]}: no `weight_map` of file names in the folder.")
        shards = sorted(set(weight_map.values()))
        missing_shards = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
        if missing_shards:
            raise ValueError(f"{folder}: missing weight shard(s) {missing_shards} listed in {index[0]}.")
        files = shards
    if not files:
        raise ValueError(f"{folder} has no .safetensors weights.")
    saved: set[str] = set()
    for file in files:
        path = os.path.join(folder, file)
        try:
            with safe_open(path, framework="pt") as f:
                saved |= set(f.keys())
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    expected = set(model.state_dict())
    raise_on_key_mismatch(folder, sorted(expected - saved), sorted(saved - expected))
