"""The model side of the app: [`DiTiApp`], whose actions (swap, interpolate, edit, reconstruct, the probe and the
shapes draw) take PIL images, check their arguments like the page's fields and call the pipeline's public methods.
Nothing here needs gradio.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from ..data import load_image_dataset
from ..data.shapes import generate_shapes
from ..partition import TimestepPartition
from .inputs import (
    FIELDS,
    AppInputError,
    check_range,
    check_scales,
    check_seed,
    check_steps,
    check_top_k,
    interpolation_alphas,
)

logger = logging.getLogger(__name__)

MAX_CACHED_PROBES = 16
DEFAULT_PROBE_DATASET = "diti-shapes"
DEFAULT_PROBE_IMAGES = 512


class DiTiApp:
    r"""
    What the page does, without the page: every action takes PIL images and returns `(image, caption)` pairs.

    Args:
        pipe ([`DiTiPipeline`]): The loaded pipeline (on its device).
        model_name (`str`, *optional*): Shown in the page's header.
        batch_size (`int`, defaults to 16): Generation batch size of the pipeline calls.
        probe_dataset (`str`, defaults to `"diti-shapes"`): A labelled dataset for on-the-fly probes (a built-in
            procedural one, or a folder written by `Dataset.save_to_disk`; see [`~diti_hf.data.load_image_dataset`]).
            Its `ClassLabel` columns are the attributes offered.
        probe_images (`int`, defaults to 512): Images of `probe_dataset` a probe is trained on.
        alignment_image (`str` or `os.PathLike`, *optional*): The alignment heatmap shown with the partition.
        findings (`str`, *optional*): What this model measured against DiTi's aim, one or two sentences for the
            page's header (e.g. [`SHIPPED_FINDINGS`]); without it the header says it is not measured here
            ([`UNMEASURED`]).
    """

    def __init__(
        self,
        pipe: Any,
        model_name: str | None = None,
        batch_size: int = 16,
        probe_dataset: str | None = DEFAULT_PROBE_DATASET,
        probe_images: int = DEFAULT_PROBE_IMAGES,
        alignment_image: str | os.PathLike | None = None,
        findings: str | None = None,
    ):
        self.pipe = pipe
        self.model_name = model_name or "DiTi pipeline"
        self.batch_size = int(batch_size)
        self.partition: TimestepPartition = pipe.partition
        self.resolution = int(pipe.encoder.config.sample_size)
        self.probe_dataset = probe_dataset
        self.probe_images = int(probe_images)
        self.alignment_image = None if alignment_image is None else Path(alignment_image)
        self.findings = findings
        self._probes: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.Lock()  # one pipeline call at a time, whatever the number of sessions
        self.factors: dict[str, list[str]] = {}
        self.probe_error: str | None = None
        if probe_dataset is not None:
            try:
                self.factors = self._factor_names()
            except Exception as error:  # an unavailable dataset only disables the probe option
                self.probe_error = f"the probe dataset {probe_dataset!r} cannot be loaded: {error}"
                logger.warning(self.probe_error)

    # ------------------------------------------------------------------ helpers
    def _dataset(self, num_images: int, seed: int):
        return load_image_dataset(
            dataset_name=self.probe_dataset, num_images=num_images, seed=seed, resolution=self.resolution
        )

    def _factor_names(self) -> dict[str, list[str]]:
        import datasets

        features = self._dataset(1, 0).features
        return {name: list(f.names) for name, f in features.items() if isinstance(f, datasets.ClassLabel)}

    def shown(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """`image` as the model sees it (after the pipeline's preprocessing)."""
        return self.pipe.postprocess(self.pipe.preprocess([image]), "pil")[0]

    def _run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            return fn()

    # ------------------------------------------------------------------ actions
    def draw_shapes(self, seed: int) -> tuple[list[PIL.Image.Image], list[str]]:
        """Two images of the built-in shapes dataset (the first two of `seed`) and their factor values."""
        data = generate_shapes(2, seed=check_seed(seed), resolution=self.resolution)
        factors = [name for name in data.column_names if name != "image"]
        labels = [", ".join(f"{f} {data.features[f].int2str(data[i][f])}" for f in factors) for i in range(len(data))]
        return list(data["image"]), labels

    def reconstruct(self, a: PIL.Image.Image, b: PIL.Image.Image, steps: int) -> list[tuple[PIL.Image.Image, str]]:
        """DDIM inversion and regeneration of A and B (`pipe.reconstruct`)."""
        steps = check_steps(steps, self.partition.num_train_timesteps)
        out = self._run(
            lambda: self.pipe.reconstruct([a, b], num_inference_steps=steps, batch_size=self.batch_size).images
        )
        return [(out[0], "A reconstructed"), (out[1], "B reconstructed")]

    def swap(
        self, a: PIL.Image.Image, b: PIL.Image.Image, lo: int, hi: int, steps: int
    ) -> list[tuple[PIL.Image.Image, str]]:
        """A with B's chunks of `[lo, hi)` and B with A's (`pipe.swap` of sources [A, B], targets [B, A])."""
        lo, hi = check_range(self.partition, lo, hi)
        steps = check_steps(steps, self.partition.num_train_timesteps)
        out = self._run(
            lambda: (
                self.pipe.swap(
                    source=[a, b],
                    target=[b, a],
                    timesteps=[(lo, hi)],
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        return [(out[0], f"A with B's t ∈ [{lo}, {hi})"), (out[1], f"B with A's t ∈ [{lo}, {hi})")]

    def interpolate(
        self, a: PIL.Image.Image, b: PIL.Image.Image, lo: int, hi: int, num: int, alpha: float, steps: int
    ) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
        """The strip A → B over `[lo, hi)` and the image at `alpha` (one `pipe.interpolate` call)."""
        lo, hi = check_range(self.partition, lo, hi)
        steps = check_steps(steps, self.partition.num_train_timesteps)
        alphas = interpolation_alphas(num, alpha)
        out = self._run(
            lambda: (
                self.pipe.interpolate(
                    [a],
                    [b],
                    alphas=alphas,
                    timesteps=(lo, hi),
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        return [(im, f"α = {x:.2f}") for im, x in zip(out[:-1], alphas[:-1])], out[-1]

    def probe_direction(self, factor: str, class_name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        r"""
        A logistic probe for "`factor` is `class_name`" on `probe_images` images of the probe dataset (trained
        once per attribute and seed, with [`~diti_hf.evaluation.probes.fit_direction_probe`]).

        Returns:
            `(weight, std, summary)`: the direction, the per-dim std of `z` it is expressed in, a markdown line.
        """
        # on use: diti_hf.evaluation loads diffusers, which `diti-hf app --help` (it reads this package) does not need
        from ..evaluation.probes import fit_direction_probe

        if self.probe_error is not None:
            raise AppInputError(self.probe_error)
        seed = check_seed(seed)
        if factor not in self.factors:
            raise AppInputError(
                f"{FIELDS['factor']}: {factor!r} is not a factor of {self.probe_dataset} ({list(self.factors)})."
            )
        if class_name not in self.factors[factor]:
            raise AppInputError(
                f"{FIELDS['class']}: {class_name!r} is not a class of {factor!r} ({self.factors[factor]})."
            )
        key = (factor, class_name, self.probe_images, seed)
        if key not in self._probes:
            if len(self._probes) >= MAX_CACHED_PROBES:  # one entry per attribute and seed asked for: bounded
                self._probes.pop(next(iter(self._probes)))
            data = self._dataset(self.probe_images, seed)

            def fit() -> dict[str, Any]:
                pixels = torch.cat(
                    [self.pipe.preprocess(data[i : i + 256]["image"]) for i in range(0, len(data), 256)]
                )
                z = self.pipe.encode(pixels, batch_size=max(self.batch_size, 64)).z.float().cpu()
                target = torch.tensor(list(data[factor])) == self.factors[factor].index(class_name)
                if not 0 < int(target.sum()) < len(target):
                    raise AppInputError(f"no contrast: {int(target.sum())} of {len(target)} images are {class_name}.")
                return {**fit_direction_probe(z, target, seed=seed), "num_positive": int(target.sum())}

            self._probes[key] = self._run(fit)
        probe = self._probes[key]
        accuracy = probe["test_accuracy"]
        summary = (
            f"probe “{factor} = {class_name}” on {self.probe_images} images of {self.probe_dataset} "
            f"({probe['num_positive']} positive): test accuracy "
            f"{'n/a' if accuracy is None else f'{accuracy:.2f}'}"
        )
        return probe["weight"], probe["std"], summary

    def edit(
        self,
        a: PIL.Image.Image,
        b: PIL.Image.Image,
        direction: torch.Tensor,
        scales: Sequence[float],
        steps: int,
        z_std: torch.Tensor | None = None,
        top_k: int | None = None,
    ) -> list[tuple[PIL.Image.Image, str]]:
        """A and B moved along `direction` by each scale (`pipe.edit`), image-major."""
        steps = check_steps(steps, self.partition.num_train_timesteps)
        top_k = check_top_k(top_k, self.partition.latent_dim)
        scales = check_scales(scales)
        out = self._run(
            lambda: (
                self.pipe.edit(
                    [a, b],
                    direction=direction,
                    scales=list(scales),
                    z_std=z_std,
                    top_k=top_k,
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        n = len(scales)
        return [(out[r * n + c], f"{name}, s = {s:g}") for r, name in enumerate("AB") for c, s in enumerate(scales)]
