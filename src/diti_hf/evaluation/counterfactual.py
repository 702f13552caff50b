"""Counterfactual score: do the chunks of one time-step range carry one group of factors?

For image pairs `(A, B)` and time-step ranges `R`, the chunks of `R` in `z_A` are replaced by `z_B`'s and an image
is generated from `A`'s inverted `x_T`. An oracle classifier trained on ground-truth images reads every factor of the
result. Per factor and range: the *flip rate* (the factor now reads as `B`'s) and the *stay rate* (still `A`'s), over
the pairs where `A` and `B` differ in that factor. A modular representation flips each factor in one range only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# swap_fn(source, target, ranges) -> (B, R, C, H, W) in [0, 1]: source images with each range swapped from target
SwapFn = Callable[[torch.Tensor, torch.Tensor, list[tuple[int, int]]], torch.Tensor]


class OracleClassifier(nn.Module):
    r"""
    A small CNN with one linear head per factor, trained on ground-truth images to read the factors of generated
    ones. Keeps a coarse spatial map (4 × 4) before the heads so that positions stay readable.

    Args:
        num_classes (`list[int]`): Classes of each factor.
        in_channels (`int`, defaults to 3): Image channels.
        width (`int`, defaults to 16): Channels of the first conv (doubled twice), a multiple of 8.
    """

    def __init__(self, num_classes: Sequence[int], in_channels: int = 3, width: int = 16):
        super().__init__()
        if not num_classes or min(num_classes) < 2:
            raise ValueError(f"`num_classes` must list >= 2 classes per factor, got {list(num_classes)}.")
        self.num_classes = [int(c) for c in num_classes]
        w = int(width)
        if w < 8 or w % 8:
            raise ValueError(f"`width` must be a positive multiple of 8, got {width}.")

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            # GroupNorm: fast, batch-independent convergence on a few thousand images
            return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]

        self.features = nn.Sequential(
            *block(in_channels, w, 1),  # full resolution first: fine textures
            *block(w, 2 * w, 2),
            *block(2 * w, 2 * w, 1),
            *block(2 * w, 4 * w, 2),
            *block(4 * w, 4 * w, 1),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(4 * w * 16, 128),
            nn.SiLU(),
        )
        self.head = nn.Linear(128, sum(self.num_classes))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """`(B, C, H, W)` in [-1, 1] → one `(B, C_f)` logit tensor per factor."""
        return list(self.head(self.features(images)).split(self.num_classes, dim=1))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
        """`(N, C, H, W)` in [-1, 1] → one `(N, C_f)` tensor of class probabilities per factor."""
        was_training = self.training
        self.eval()
        chunks = [
            [lg.softmax(1) for lg in self(images[i : i + batch_size].float())]
            for i in range(0, images.shape[0], batch_size)
        ]
        self.train(was_training)
        if not chunks:
            return [torch.zeros(0, c) for c in self.num_classes]
        return [torch.cat([c[f] for c in chunks]) for f in range(len(self.num_classes))]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """`(N, C, H, W)` in [-1, 1] → `(N, F)` predicted class indices."""
        probs = self.predict_proba(images, batch_size)
        return torch.stack([p.argmax(1) for p in probs], 1)


def train_oracle(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: Sequence[int],
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 1e-3,
    noise_std: float = 0.05,
    width: int = 16,
    seed: int = 0,
) -> tuple[OracleClassifier, list[float] | None]:
    r"""
    Trains an [`OracleClassifier`] on ground-truth images.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` in [-1, 1].
        labels (`torch.Tensor`): `(N, F)` class indices.
        num_classes (`list[int]`): Classes per factor.
        val_images, val_labels (`torch.Tensor`, *optional*): A held-out split for the reported accuracy.
        epochs (`int`, defaults to 12): Passes over `images`.
        batch_size (`int`, defaults to 32): Mini-batch size.
        lr (`float`, defaults to 1e-3): Adam learning rate (cosine-decayed to 0).
        noise_std (`float`, defaults to 0.05): Gaussian noise added to training images, so that the slight noise and
            blur of generated images do not fool the oracle.
        width (`int`, defaults to 16): CNN width.
        seed (`int`, defaults to 0): Seed of the initialisation, the batch order and the noise.

    Returns:
        `(oracle, val_accuracy)`: the trained oracle (eval mode) and its per-factor validation accuracy (or `None`).
    """
    images = torch.as_tensor(images).float()
    labels = torch.as_tensor(labels).long()
    if images.ndim != 4 or labels.ndim != 2 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"`images` (N, C, H, W) and `labels` (N, F) must match and be non-empty, got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}."
        )
    if labels.shape[1] != len(num_classes):
        raise ValueError(f"`labels` has {labels.shape[1]} columns for {len(num_classes)} `num_classes`.")
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1, got {epochs}.")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        oracle = OracleClassifier(num_classes, images.shape[1], width)
    optimizer = torch.optim.Adam(oracle.parameters(), lr=lr)
    steps = epochs * -(-images.shape[0] // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    oracle.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for i in range(0, images.shape[0], batch_size):
            idx = order[i : i + batch_size]
            x = images[idx]
            if noise_std > 0:
                x = x + noise_std * torch.randn(x.shape, generator=generator)
            loss = sum(F.cross_entropy(lg, labels[idx, f]) for f, lg in enumerate(oracle(x)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    oracle.eval()
    val_accuracy = None
    if val_images is not None and val_labels is not None:
        pred = oracle.predict(torch.as_tensor(val_images).float())
        val_accuracy = (pred == torch.as_tensor(val_labels).long()).float().mean(0).tolist()
    return oracle, val_accuracy


def flip_rates(predictions: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""
    Flip and stay rates of every factor under every swap.

    Args:
        predictions (`torch.Tensor`): `(N, R, F)` factor classes read from the `R` swapped images of each pair.
        labels_a (`torch.Tensor`): `(N, F)` factors of the source images `A`.
        labels_b (`torch.Tensor`): `(N, F)` factors of the images `B` the chunks come from.

    Returns:
        `dict`: `"flip"` and `"stay"` `(F, R)` — among the pairs where `A` and `B` differ in factor `f`, the fraction
        whose swapped image reads `B`'s (resp. `A`'s) class (NaN if no pair differs); `"num_pairs"` `(F,)` — the
        number of such pairs.
    """
    predictions, labels_a, labels_b = (torch.as_tensor(t).long() for t in (predictions, labels_a, labels_b))
    if (
        predictions.ndim != 3
        or labels_a.shape != labels_b.shape
        or labels_a.shape
        != (
            predictions.shape[0],
            predictions.shape[2],
        )
    ):
        raise ValueError(
            f"`predictions` must be (N, R, F) and the labels (N, F), got {tuple(predictions.shape)}, "
            f"{tuple(labels_a.shape)} and {tuple(labels_b.shape)}."
        )
    differ = (labels_a != labels_b).double()  # (N, F)
    counts = differ.sum(0)  # (F,)
    follows_b = (predictions == labels_b[:, None, :]).double()  # (N, R, F)
    keeps_a = (predictions == labels_a[:, None, :]).double()
    flip = (follows_b * differ[:, None, :]).sum(0).T / counts[:, None]
    stay = (keeps_a * differ[:, None, :]).sum(0).T / counts[:, None]
    return {"flip": flip, "stay": stay, "num_pairs": counts.long()}


def summarise_flips(flip: torch.Tensor, targets: Sequence[int] | None = None) -> dict:
    r"""
    Targeted flip rate and leakage of a `(F, R)` flip-rate matrix.

    Each factor's *target* range is `targets[f]` or, by default, the range that flips it most. Targeted flip rate:
    mean over factors of `flip[f, target(f)]` (1 = every swap of the right range transfers the factor). Leakage: mean
    of `flip[f, r]` over the other ranges `r != target(f)` (0 = no other range moves the factor). Factors with a
    NaN row (no differing pair) are skipped.

    Returns:
        `dict` with `targets`, `targeted_flip_rate`, `leakage` (`None` with a single range) and `selectivity`
        (targeted flip rate − leakage).
    """
    flip = torch.as_tensor(flip).double()
    if flip.ndim != 2 or flip.shape[1] == 0:
        raise ValueError(f"`flip` must be an (F, R) matrix, got shape {tuple(flip.shape)}.")
    n_factors, n_ranges = flip.shape
    if targets is None:
        targets = [int(torch.nan_to_num(row, nan=-1.0).argmax()) for row in flip]
    targets = [int(t) for t in targets]
    if len(targets) != n_factors or any(not 0 <= t < n_ranges for t in targets):
        raise ValueError(f"`targets` must give a range index in [0, {n_ranges}) for each of {n_factors} factors.")
    valid = [f for f in range(n_factors) if not torch.isnan(flip[f]).any()]
    if not valid:
        return {"targets": targets, "targeted_flip_rate": None, "leakage": None, "selectivity": None}
    targeted = sum(float(flip[f, targets[f]]) for f in valid) / len(valid)
    leakage = None
    if n_ranges > 1:
        others = [float(flip[f, r]) for f in valid for r in range(n_ranges) if r != targets[f]]
        leakage = sum(others) / len(others)
    return {
        "targets": targets,
        "targeted_flip_rate": targeted,
        "leakage": leakage,
        "selectivity": None if leakage is None else targeted - leakage,
    }


def sample_pairs(num_items: int, num_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_pairs` seeded index pairs `(a, b)` with `a != b` from `range(num_items)`."""
    if num_items < 2:
        raise ValueError(f"`num_items` must be >= 2 to form pairs, got {num_items}.")
    if num_pairs < 1:
        raise ValueError(f"`num_pairs` must be >= 1, got {num_pairs}.")
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, num_items, (num_pairs,), generator=g)
    b = (a + torch.randint(1, num_items, (num_pairs,), generator=g)) % num_items  # uniform over the others
    return a, b


@dataclass
class CounterfactualResult:
    r"""
    Args:
        factor_names (`list[str]`): Rows.
        ranges (`list[tuple[int, int]]`): Swapped time-step ranges, columns.
        flip, stay (`torch.Tensor`): `(F, R)` flip and stay rates.
        num_pairs (`torch.Tensor`): `(F,)` pairs differing in each factor.
        summary (`dict`): [`summarise_flips`] of `flip`.
        oracle_accuracy (`list[float] | None`): The oracle's per-factor accuracy on held-out ground-truth images.
    """

    factor_names: list[str]
    ranges: list[tuple[int, int]]
    flip: torch.Tensor
    stay: torch.Tensor
    num_pairs: torch.Tensor
    summary: dict
    oracle_accuracy: list[float] | None = None

    def to_dict(self) -> dict:
        return {
            "factors": self.factor_names,
            "ranges": [list(r) for r in self.ranges],
            "flip_rate": self.flip.tolist(),
            "stay_rate": self.stay.tolist(),
            "num_differing_pairs": dict(zip(self.factor_names, self.num_pairs.tolist())),
            "targets": {n: list(self.ranges[t]) for n, t in zip(self.factor_names, self.summary["targets"])},
            "targeted_flip_rate": self.summary["targeted_flip_rate"],
            "leakage": self.summary["leakage"],
            "selectivity": self.summary["selectivity"],
            "oracle_accuracy": None
            if self.oracle_accuracy is None
            else dict(zip(self.factor_names, self.oracle_accuracy)),
        }


def counterfactual_score(
    swap_fn: SwapFn,
    oracle: OracleClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    ranges: Sequence[tuple[int, int]],
    factor_names: Sequence[str],
    num_pairs: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    targets: Sequence[int] | None = None,
    oracle_accuracy: list[float] | None = None,
) -> CounterfactualResult:
    r"""
    Swaps the chunks of each range between random pairs and measures which factors follow.

    Args:
        swap_fn (`Callable`): `swap_fn(source, target, ranges)` with `(B, C, H, W)` images in [-1, 1] returning
            `(B, R, C, H, W)` images in [0, 1]: each source with the chunks of each range taken from the target
            (see [`pipeline_functions`]).
        oracle ([`OracleClassifier`]): Reads the factors of the generated images.
        images (`torch.Tensor`): `(N, C, H, W)` pool of images in [-1, 1] (held out from probe and oracle training).
        labels (`torch.Tensor`): `(N, F)` their factors.
        ranges (`list[tuple[int, int]]`): Half-open time-step ranges to swap.
        factor_names (`list[str]`): Names of the `F` factors.
        num_pairs (`int`, defaults to 64): Random pairs.
        batch_size (`int`, defaults to 16): Pairs per `swap_fn` call.
        seed (`int`, defaults to 0): Seed of the pairs.
        targets (`list[int]`, *optional*): Target range of each factor (default: its most flipping range).
        oracle_accuracy (`list[float]`, *optional*): Stored in the result for the report.

    Returns:
        [`CounterfactualResult`]
    """
    ranges = [(int(lo), int(hi)) for lo, hi in ranges]
    if not ranges or any(not 0 <= lo < hi for lo, hi in ranges):
        raise ValueError(f"`ranges` must be non-empty half-open time-step ranges (lo < hi), got {ranges}.")
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if images.shape[0] != labels.shape[0] or labels.shape[1] != len(factor_names):
        raise ValueError(
            f"`images` ({images.shape[0]}) and `labels` {tuple(labels.shape)} must match each other and the "
            f"{len(factor_names)} `factor_names`."
        )
    idx_a, idx_b = sample_pairs(images.shape[0], num_pairs, seed)
    predictions = []
    for i in range(0, num_pairs, batch_size):
        a, b = idx_a[i : i + batch_size], idx_b[i : i + batch_size]
        out = torch.as_tensor(swap_fn(images[a], images[b], ranges))
        if out.ndim != 5 or out.shape[:2] != (len(a), len(ranges)):
            raise ValueError(
                f"`swap_fn` must return (B={len(a)}, R={len(ranges)}, C, H, W) images, got {tuple(out.shape)}."
            )
        preds = oracle.predict(out.flatten(0, 1).float() * 2 - 1)
        predictions.append(preds.view(len(a), len(ranges), -1))
    rates = flip_rates(torch.cat(predictions), labels[idx_a], labels[idx_b])
    return CounterfactualResult(
        factor_names=list(factor_names),
        ranges=ranges,
        flip=rates["flip"],
        stay=rates["stay"],
        num_pairs=rates["num_pairs"],
        summary=summarise_flips(rates["flip"], targets),
        oracle_accuracy=oracle_accuracy,
    )
