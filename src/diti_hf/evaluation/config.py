"""The sizes and switches of the evaluation suite ([`EvaluationConfig`]), and how the per-image sizes follow the
dataset when left unset (`DEFAULT_SIZES`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .control import SWAP_PROTOCOLS
from .probes import ProbeConfig, split_sizes

# The per-image sizes of [`EvaluationConfig`] that follow the dataset when left unset: size → (default, pool). An
# unset size is `min(default, images in its pool)`, the pool being the test split its section draws from (`"test"`)
# or the whole dataset (`"all"`), so that a run on a few images is a few images' work. A size given explicitly wins.
DEFAULT_SIZES: dict[str, tuple[int, str]] = {
    "num_swap_pairs": (64, "test"),
    "num_attribute_loss_images": (128, "test"),
    "num_reconstruction_images": (32, "test"),
    "num_loss_profile_images": (128, "test"),
    "num_regeneration_images": (48, "test"),
    "num_validity_samples": (64, "test"),  # compared with the oracle's reads of the test images
    "granularity_pairs": (256, "all"),
    "disentanglement_images": (1000, "all"),
}


@dataclass
class EvaluationConfig:
    r"""
    Sizes and switches of [`evaluate_pipeline`] (defaults: a few thousand 32×32 images in about a minute on 2 CPU
    cores, plus the counterfactual generation).

    The per-image sizes (`num_swap_pairs`, `num_attribute_loss_images`, `num_reconstruction_images`,
    `num_loss_profile_images`, `num_regeneration_images`, `num_validity_samples`, `granularity_pairs`,
    `disentanglement_images`) default to `None`: the smaller of their default and the images of the pool they draw
    from, the test split or the whole dataset (see `DEFAULT_SIZES` and [`~EvaluationConfig.sized_for`]). The report's
    `config` holds the sizes used and names those set this way (`auto_sizes`).

    Args:
        seed (`int`, defaults to 0): Seed of the splits, probes, oracle, random encoder and pairs.
        split_fractions (`tuple[float, float, float]`, defaults to `(0.6, 0.2, 0.2)`): Train/val/test fractions.
        probe ([`ProbeConfig`]): Linear-probe training (epoch chosen on val, test reported).
        alignment_threshold (`float`, defaults to 0.9): Fraction of the full-`z` gain that counts as decodable.
        alignment_min_gain (`float`, defaults to 0.05): Minimum full-`z` gain over chance for a factor to count.
        max_alignment_groups (`int`, *optional*, defaults to 64): Chunk groups probed (`None`: every chunk).
        random_baseline (`bool`, defaults to `True`): Add a randomly initialised encoder (config of the first model
            with an encoder).
        pixel_baseline (`bool`, defaults to `True`): Add raw pixels.
        counterfactual (`bool`, defaults to `True`): Run the counterfactual score for models with a `swap_fn`.
        swap_ranges (`list[tuple[int, int]]`, *optional*): Time-step ranges to swap; default `num_swap_ranges`
            equal ranges of `[0, T)`.
        num_swap_ranges (`int`, defaults to 4): See `swap_ranges`.
        num_swap_pairs (`int`, *optional*, defaults to 64, at most the test images): Pairs per model.
        swap_batch_size (`int`, defaults to 16): Pairs per swap call.
        oracle_epochs (`int`, defaults to 12): Oracle training epochs (on the train split).
        attribute_loss (`bool`, defaults to `True`): Measure each factor's attribute-loss time with the frozen DDPM of
            the first model that has one (needs the oracle).
        num_attribute_loss_images (`int`, *optional*, defaults to 128, at most the test images): Test images noised
            at each probed time-step.
        attribute_loss_timesteps (`list[int]`, defaults to 0, 100, …, 900): Time-steps probed.
        reconstruction (`bool`, defaults to `True`): Reconstruction metrics for models with a `reconstruct_fn`.
        num_reconstruction_images (`int`, *optional*, defaults to 32, at most the test images): Test images
            reconstructed.
        num_inference_steps (`int`, defaults to 20): DDIM steps of swaps and reconstructions (pipelines).
        loss_profile (`bool`, defaults to `True`): The frozen DDPM's loss profile (see
            [`~diti_hf.evaluation.loss_profile`]) and the partition fitted to it.
        num_loss_profile_images (`int`, *optional*, defaults to 128, at most the test images): Test images of the
            loss profile.
        regeneration (`bool`, defaults to `True`): Regeneration keep-rates of models that can generate (see
            [`~diti_hf.evaluation.regeneration_keep_rates`]).
        regeneration_timesteps (`list[int]`, defaults to 250, 500, 750, 999): Noise levels regenerated from.
        num_regeneration_images (`int`, *optional*, defaults to 48, at most the test images): Images regenerated at
            each level.
        swap_protocols (`list[str]`, defaults to every protocol): Swap protocols compared (see
            `evaluation.control.SWAP_PROTOCOLS`) on the same pairs as the counterfactual score; `[]` skips them.
        sample_validity (`bool`, defaults to `True`): Read unconditional samples of the frozen DDPM with the oracle.
        num_validity_samples (`int`, *optional*, defaults to 64, at most the test images): Samples drawn.
        validity_confidence (`float`, defaults to 0.9): Oracle probability that counts as a confident read.
        num_sample_steps (`int`, defaults to 50): DDIM steps of those samples.
        sample_eta (`float`, defaults to 0.0): DDIM η of a bare DDPM's samples (0: deterministic, the sampler DiTi
            generates with; 1: as stochastic as ancestral sampling). A DiTi pipeline samples with its own
            deterministic DDIM.
        granularity_pairs (`int`, *optional*, defaults to 256, at most the images): Base images per factor for the
            granularity measure.
        encode_batch_size (`int`, defaults to 256): Encoding batch size.
        disentanglement (`bool`, defaults to `True`): DCI, MIG, SAP and the FactorVAE score of every model and
            baseline (see [`~diti_hf.evaluation.disentanglement`]), and for partitioned models the DCI importance of
            each time-step group.
        disentanglement_images (`int`, *optional*, defaults to 1000, at most the images): Images (a seeded draw from
            all splits) of those metrics.
        disentanglement_estimator (`str`, defaults to `"gbt"`): DCI's classifier, `"gbt"` or `"random_forest"`.
        disentanglement_max_dim (`int`, defaults to 512): Features wider than this (raw pixels) are first projected
            on their top `disentanglement_pca_dim` principal components (fitted on the metrics' draw).
        disentanglement_pca_dim (`int`, defaults to 64): Principal components kept for those features.
        plots (`bool`, defaults to `True`): Write PNG plots next to the JSON report.
    """

    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    alignment_threshold: float = 0.9
    alignment_min_gain: float = 0.05
    max_alignment_groups: int | None = 64
    random_baseline: bool = True
    pixel_baseline: bool = True
    counterfactual: bool = True
    swap_ranges: list[tuple[int, int]] | None = None
    num_swap_ranges: int = 4
    num_swap_pairs: int | None = None
    swap_batch_size: int = 16
    oracle_epochs: int = 12
    attribute_loss: bool = True
    num_attribute_loss_images: int | None = None
    attribute_loss_timesteps: list[int] = field(default_factory=lambda: list(range(0, 1000, 100)))
    reconstruction: bool = True
    num_reconstruction_images: int | None = None
    num_inference_steps: int = 20
    loss_profile: bool = True
    num_loss_profile_images: int | None = None
    regeneration: bool = True
    regeneration_timesteps: list[int] = field(default_factory=lambda: [250, 500, 750, 999])
    num_regeneration_images: int | None = None
    swap_protocols: list[str] = field(default_factory=lambda: list(SWAP_PROTOCOLS))
    sample_validity: bool = True
    num_validity_samples: int | None = None
    validity_confidence: float = 0.9
    num_sample_steps: int = 50
    sample_eta: float = 0.0
    granularity_pairs: int | None = None
    encode_batch_size: int = 256
    disentanglement: bool = True
    disentanglement_images: int | None = None
    disentanglement_estimator: str = "gbt"
    disentanglement_max_dim: int = 512
    disentanglement_pca_dim: int = 64
    plots: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            self.probe = ProbeConfig(**self.probe)
        unknown = [p for p in self.swap_protocols if p not in SWAP_PROTOCOLS]
        if unknown:
            raise ValueError(f"`swap_protocols` must be drawn from {SWAP_PROTOCOLS}, got {self.swap_protocols}.")
        sizes = ("num_swap_ranges", "swap_batch_size", "oracle_epochs", "num_inference_steps", "num_sample_steps")
        for name in (*sizes, "disentanglement_max_dim", "disentanglement_pca_dim", *DEFAULT_SIZES):
            value = getattr(self, name)
            if name in DEFAULT_SIZES and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if self.disentanglement_estimator not in ("gbt", "random_forest"):
            raise ValueError(
                f"`disentanglement_estimator` must be 'gbt' or 'random_forest', got {self.disentanglement_estimator!r}."
            )
        if not 0.0 <= float(self.sample_eta) <= 1.0:
            raise ValueError(f"`sample_eta` must lie in [0, 1], got {self.sample_eta!r}.")
        if self.swap_ranges is not None:
            self.swap_ranges = [(int(lo), int(hi)) for lo, hi in self.swap_ranges]
            if not self.swap_ranges or any(not 0 <= lo < hi for lo, hi in self.swap_ranges):
                raise ValueError(
                    f"`swap_ranges` must be non-empty (lo, hi) ranges with lo < hi, got {self.swap_ranges}."
                )

    def to_dict(self) -> dict:
        return asdict(self)

    def sized_for(self, splits: Mapping[str, int]) -> EvaluationConfig:
        r"""
        This config with every unset per-image size set by the rule of `DEFAULT_SIZES`: the smaller of its default
        and the images of its pool.

        Args:
            splits (`dict[str, int]`): Images in the `"train"`, `"val"` and `"test"` splits.

        Returns:
            [`EvaluationConfig`]: A copy whose sizes are all set.
        """
        pools = {"test": int(splits["test"]), "all": sum(int(n) for n in splits.values())}
        unset = {name: min(default, pools[pool]) for name, (default, pool) in DEFAULT_SIZES.items()}
        return dataclasses.replace(self, **{n: v for n, v in unset.items() if getattr(self, n) is None})

    def minimum_images(self, pairs: bool | None = None) -> tuple[int, str]:
        r"""
        The fewest images from which on every run with this config works, and what for: one image in each split, and
        two test images when a section pairs them (the counterfactual score and its swap protocols, the regeneration
        keep-rates). The splits round, so a few sizes below it may work too (7 of the default fractions' 9).

        Args:
            pairs (`bool`, *optional*): Whether a section that pairs test images runs (default: whether one is
                switched on).

        Returns:
            `(minimum, reason)`: the number of images and the end of a sentence saying what needs them.
        """
        pairs = (self.counterfactual or self.regeneration) if pairs is None else pairs
        test = 2 if pairs else 1
        reason = f"the train/val/test splits {tuple(self.split_fractions)}"
        if pairs:
            reason += " and 2 test images to pair (counterfactual swaps, regeneration)"
        # each split is within 1 of its fraction of the images, so every size from `bound` on fits; the splits'
        # rounding makes fitting not monotone below it (8 images split 5/2/1), hence the downward search
        train, val, test_fraction = (float(f) for f in self.split_fractions)
        bound = math.ceil(max((test + 1) / test_fraction, 1.5 / train, 1.5 / val))

        def fits(num_images: int) -> bool:
            n_train, n_val, n_test = split_sizes(num_images, self.split_fractions)
            return n_train >= 1 and n_val >= 1 and n_test >= test

        minimum = bound
        while minimum > 1 and fits(minimum - 1):
            minimum -= 1
        return minimum, reason

    def check_num_images(self, num_images: int, pairs: bool | None = None) -> None:
        r"""
        Raises a `ValueError` naming `num_images` when it is below [`~EvaluationConfig.minimum_images`].

        Args:
            num_images (`int`): The images of the run.
            pairs (`bool`, *optional*): See [`~EvaluationConfig.minimum_images`].
        """
        minimum, reason = self.minimum_images(pairs)
        if num_images < minimum:
            raise ValueError(
                f"`num_images` {num_images} is too small: at least {minimum} images are needed for {reason}."
            )
