"""Linear probes on frozen features (docs/method.md §9) and the metrics they report: accuracy, AP, Pearson r, MSE.

Many probes are trained at once: a bank of `P` independent linear models, probe `p` seeing only the feature dims
of `masks[p]`. Their losses are summed and Adam is element-wise, so each probe's updates are exactly those it would
get if trained alone — the bank is only a speed-up (one einsum instead of `P` small loops).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

TASKS = ("multiclass", "binary", "regression")
SELECTIONS = ("per_head", "joint")
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------------- metrics
def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""
    Average precision `Σ_n (R_n − R_{n−1}) P_n` over the distinct score thresholds (scikit-learn's definition: tied
    scores form one threshold), batched over leading dims.

    Args:
        scores (`torch.Tensor`): `(..., N)` scores, higher = more positive.
        labels (`torch.Tensor`): `(..., N)` binary labels (bool or {0, 1}).

    Returns:
        `torch.Tensor`: `(...)` float64 AP; NaN where a row has no positive.
    """
    if scores.shape != labels.shape or scores.ndim < 1:
        raise ValueError(
            f"`scores` and `labels` must have the same shape (..., N), got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}."
        )
    scores = scores.detach().double()
    labels = labels.detach().to(torch.float64)
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    s = torch.gather(scores, -1, order)
    y = torch.gather(labels, -1, order)
    tp = y.cumsum(-1)
    rank = torch.arange(1, s.shape[-1] + 1, dtype=torch.float64, device=s.device)
    # a threshold ends where the next score differs (or at the last element)
    is_end = torch.ones_like(s, dtype=torch.bool)
    is_end[..., :-1] = s[..., :-1] != s[..., 1:]
    tp_end = torch.where(is_end, tp, torch.zeros_like(tp))
    tp_prev_end = torch.cat([torch.zeros_like(tp[..., :1]), tp_end.cummax(-1).values[..., :-1]], -1)
    gained = torch.where(is_end, tp - tp_prev_end, torch.zeros_like(tp))
    n_pos = tp[..., -1]
    ap = (gained * tp / rank).sum(-1) / n_pos
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


def pearson_r(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dim, `(..., N)` → `(...)` float64; NaN where either side is constant."""
    if pred.shape != target.shape:
        raise ValueError(f"`pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} must have the same shape.")
    p = pred.detach().double()
    t = target.detach().double()
    p = p - p.mean(-1, keepdim=True)
    t = t - t.mean(-1, keepdim=True)
    denom = (p.square().sum(-1) * t.square().sum(-1)).sqrt()
    r = (p * t).sum(-1) / denom
    return torch.where(denom > 0, r, torch.full_like(r, float("nan")))


def spearman_r(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float:
    """Spearman rank correlation (Pearson r of average ranks, so ties are handled); NaN for < 2 points."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same length, got {x.numel()} and {y.numel()}.")
    if x.numel() < 2:
        return float("nan")
    return float(pearson_r(_average_ranks(x), _average_ranks(y)))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(values)
    for i, v in enumerate(values):
        ranks[i] = (values < v).sum() + ((values == v).sum() + 1) / 2
    return ranks


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of equal entries along the last dim, `(..., N)` → `(...)` float64."""
    if pred.shape != target.shape:
        raise ValueError(f"`pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} must have the same shape.")
    return (pred == target).double().mean(-1)


def multiclass_average_precision(probs: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Macro one-vs-rest AP: `(..., N, C)` class scores, `(N,)` labels → `(...)` mean AP over classes present."""
    onehot = F.one_hot(target.long(), num_classes).T.bool()  # (C, N)
    ap = average_precision(probs.movedim(-1, -2), onehot.expand(probs.shape[:-2] + onehot.shape))
    return ap.nanmean(-1)


# ---------------------------------------------------------------------------------------------------------- probes
@dataclass
class ProbeConfig:
    r"""
    Training of the linear probes (defaults: docs/method.md §9 — Adam 1e-3, 15 epochs, batch 128).

    Args:
        epochs (`int`, defaults to 15): Training epochs; the reported epoch is chosen on the validation split.
        lr (`float`, defaults to 1e-3): Adam learning rate.
        batch_size (`int`, defaults to 128): Mini-batch size.
        weight_decay (`float`, defaults to 0.0): Adam (L2) weight decay.
        standardize (`bool`, defaults to `True`): Standardise features with the train split's mean/std (raw `z`
            dims have arbitrary scales; a probe is linear, so this changes only the optimisation).
        selection (`str`, defaults to `"per_head"`): `"per_head"` chooses the epoch for every output head (factor
            or attribute) on its own val metric; `"joint"` chooses one epoch per probe on the mean over heads.
        seed (`int`, defaults to 0): Seed of the mini-batch order.
    """

    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    standardize: bool = True
    selection: str = "per_head"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive int, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}.")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay}.")
        if self.selection not in SELECTIONS:
            raise ValueError(f"`selection` must be one of {SELECTIONS}, got {self.selection!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeResult:
    r"""
    Test metrics of a bank of `P` probes with `H` heads each, at the epoch chosen on validation.

    Args:
        task (`str`): `"multiclass"`, `"binary"` or `"regression"`.
        metrics (`dict[str, torch.Tensor]`): metric name → `(P, H)` test values: `accuracy` and
            `average_precision` (multiclass, binary), `pearson_r` and `mse` (regression).
        val_metrics (`dict[str, torch.Tensor]`): the same on the validation split.
        best_epoch (`torch.Tensor`): `(P, H)` selected epoch (0-based).
        chance (`torch.Tensor`): `(H,)` majority-class test accuracy (multiclass, binary) or the test MSE of
            predicting the train mean (regression).
    """

    task: str
    metrics: dict[str, torch.Tensor]
    val_metrics: dict[str, torch.Tensor]
    best_epoch: torch.Tensor
    chance: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)


def _as_tensor(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if dtype is not None:
        t = t.to(dtype)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D array (N, ·), got shape {tuple(t.shape)}.")
    return t


def _check_splits(mapping: Mapping, name: str) -> None:
    if not isinstance(mapping, Mapping) or set(mapping) != set(SPLITS):
        keys = sorted(mapping) if isinstance(mapping, Mapping) else type(mapping).__name__
        raise ValueError(f"`{name}` must map exactly the splits {SPLITS} to arrays, got {keys}.")


def _checked_inputs(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    task: str,
    num_classes: Sequence[int] | None,
    masks: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[int], torch.Tensor]:
    """`(x, y, num_classes, masks)` of [`fit_linear_probes`], checked: one-line errors naming the argument."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    _check_splits(features, "features")
    _check_splits(targets, "targets")
    x = {s: _as_tensor(features[s], f"features[{s!r}]", torch.float32) for s in SPLITS}
    y_dtype = torch.long if task == "multiclass" else torch.float32
    y = {s: _as_tensor(targets[s], f"targets[{s!r}]", y_dtype) for s in SPLITS}
    d, n_heads = x["train"].shape[1], y["train"].shape[1]
    for s in SPLITS:
        if x[s].shape[1] != d or y[s].shape[1] != n_heads or x[s].shape[0] != y[s].shape[0]:
            raise ValueError(
                f"split {s!r}: features {tuple(x[s].shape)} and targets {tuple(y[s].shape)} do not match the train "
                f"split (d={d}, heads={n_heads}) or each other."
            )
        if not torch.isfinite(x[s]).all():
            raise ValueError(f"`features[{s!r}]` contains NaN or infinite values.")
    if task == "multiclass":
        if num_classes is None:
            num_classes = [int(max(y[s][:, h].max() for s in SPLITS)) + 1 for h in range(n_heads)]
        num_classes = [int(c) for c in num_classes]
        if len(num_classes) != n_heads or min(num_classes) < 2:
            raise ValueError(f"`num_classes` must give >= 2 classes for each of {n_heads} heads, got {num_classes}.")
        for s in SPLITS:
            if y[s].min() < 0 or (y[s] >= torch.tensor(num_classes)).any():
                raise ValueError(f"`targets[{s!r}]` has class indices outside [0, num_classes={num_classes}).")
    else:
        num_classes = [1] * n_heads
    if task == "binary":
        for s in SPLITS:
            if not ((y[s] == 0) | (y[s] == 1)).all():
                raise ValueError(f"`targets[{s!r}]` must be 0/1 for task='binary'.")
    if masks is None:
        masks = torch.ones(1, d, dtype=torch.bool)
    masks = torch.as_tensor(masks).bool()
    if masks.ndim != 2 or masks.shape[1] != d or masks.shape[0] == 0:
        raise ValueError(f"`masks` must have shape (P, d={d}), got {tuple(masks.shape)}.")
    return x, y, num_classes, masks


class _ProbeBank:
    """`P` masked linear models with `H` heads of up to `C_max` classes, as one einsum; their losses and metrics."""

    def __init__(self, task: str, masks: torch.Tensor, num_classes: list[int], config: ProbeConfig):
        self.task, self.num_classes, self.config = task, num_classes, config
        d = masks.shape[1]
        self.n_probes, self.n_heads, self.c_max = masks.shape[0], len(num_classes), max(num_classes)
        # Heads are padded to the widest: padded classes get a -1e4 logit (never predicted).
        self.pad_bias = torch.zeros(self.n_heads, self.c_max)
        for h, c in enumerate(num_classes):
            self.pad_bias[h, c:] = -1e4
        self.weight_mask = masks.float()[:, :, None]
        self.weight = torch.zeros(self.n_probes, d, self.n_heads * self.c_max, requires_grad=True)
        self.bias = torch.zeros(self.n_probes, self.n_heads * self.c_max, requires_grad=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """`(N, d)` → `(P, N, H, C_max)` logits."""
        out = torch.einsum("nd,pdo->pno", inputs, self.weight * self.weight_mask) + self.bias[:, None, :]
        return out.view(self.n_probes, inputs.shape[0], self.n_heads, self.c_max) + self.pad_bias

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.forward(inputs[i : i + 4096]) for i in range(0, inputs.shape[0], 4096)], 1)

    def head_losses(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`(P, H)` mean loss per head: cross-entropy, BCE or MSE."""
        if self.task == "multiclass":
            index = target[None, :, :, None].expand(out.shape[0], -1, -1, 1)
            return -out.log_softmax(-1).gather(-1, index)[..., 0].mean(1)
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(
                out[..., 0], target.expand_as(out[..., 0]), reduction="none"
            ).mean(1)
        return (out[..., 0] - target).square().mean(1)

    def metrics(self, out: torch.Tensor, target: torch.Tensor, full: bool = True) -> dict[str, torch.Tensor]:
        """Metric → `(P, H)`; `full=False` computes only what epoch selection needs."""
        if self.task == "multiclass":
            metrics = {"accuracy": (out.argmax(-1) == target).double().mean(1)}
            if full:
                metrics["average_precision"] = torch.stack(
                    [
                        multiclass_average_precision(out[:, :, h, :c].softmax(-1), target[:, h], c)
                        for h, c in enumerate(self.num_classes)
                    ],
                    1,
                )
            return metrics
        scores, tt = out[..., 0].transpose(1, 2), target.T.expand(out.shape[0], -1, -1)  # (P, H, N)
        if self.task == "binary":
            return {
                "accuracy": accuracy((scores > 0).to(tt.dtype), tt),
                "average_precision": average_precision(scores, tt),
            }
        return {"pearson_r": pearson_r(scores, tt), "mse": (scores - tt).double().square().mean(-1)}

    def selection_score(self, metrics: dict[str, torch.Tensor], losses: torch.Tensor) -> torch.Tensor:
        """`(P, H)`, higher is better; the val loss breaks ties between epochs of equal accuracy."""
        if self.task == "multiclass":
            score = metrics["accuracy"] - 1e-6 * losses.double()
        elif self.task == "binary":
            score = torch.nan_to_num(metrics["average_precision"], nan=0.0) - 1e-9 * losses.double()
        else:
            score = -metrics["mse"]
        if self.config.selection == "joint":
            score = score.mean(1, keepdim=True).expand_as(score)
        return score


def fit_linear_probes(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    task: str = "multiclass",
    num_classes: Sequence[int] | None = None,
    masks: torch.Tensor | None = None,
    config: ProbeConfig | None = None,
) -> ProbeResult:
    r"""
    Trains a bank of linear probes on frozen features, chooses the epoch on validation, reports test metrics.

    Args:
        features (`dict[str, torch.Tensor]`): `{"train", "val", "test"}` → `(N, d)` features.
        targets (`dict[str, torch.Tensor]`): the same splits → `(N, H)` targets: class indices (multiclass, one
            column per factor), {0, 1} (binary, one column per attribute) or floats (regression).
        task (`str`, defaults to `"multiclass"`): One of `TASKS`. Multiclass heads use cross-entropy, binary heads
            BCE, regression heads MSE.
        num_classes (`list[int]`, *optional*): Classes of each multiclass head (default: `max + 1` over splits).
        masks (`torch.Tensor`, *optional*): `(P, d)` bool — probe `p` sees only dims `masks[p]`. Default: one probe
            seeing every dim.
        config ([`ProbeConfig`], *optional*): Training settings.

    Returns:
        [`ProbeResult`]
    """
    config = config or ProbeConfig()
    x, y, num_classes, masks = _checked_inputs(features, targets, task, num_classes, masks)
    if config.standardize:
        mean = x["train"].mean(0)
        std = x["train"].std(0, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        x = {s: (v - mean) / std for s, v in x.items()}
    bank = _ProbeBank(task, masks, num_classes, config)
    optimizer = torch.optim.Adam(
        [bank.weight, bank.bias], lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    generator = torch.Generator().manual_seed(config.seed)
    n_train, n_heads = x["train"].shape[0], bank.n_heads
    best_score = torch.full((bank.n_probes, n_heads), -float("inf"), dtype=torch.float64)
    best_epoch = torch.zeros(bank.n_probes, n_heads, dtype=torch.long)
    best_val_out = torch.zeros(bank.n_probes, x["val"].shape[0], n_heads, bank.c_max)
    best_test_out = torch.zeros(bank.n_probes, x["test"].shape[0], n_heads, bank.c_max)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    for epoch in range(config.epochs):
        order = torch.randperm(n_train, generator=generator)
        total = 0.0
        for i in range(0, n_train, config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = bank.head_losses(bank.forward(x["train"][idx]), y["train"][idx]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_out, test_out = bank.predict(x["val"]), bank.predict(x["test"])
        val_losses = bank.head_losses(val_out, y["val"])
        score = bank.selection_score(bank.metrics(val_out, y["val"], full=False), val_losses)
        better = score > best_score  # strict: the earliest of equally good epochs wins
        best_score = torch.where(better, score, best_score)
        best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
        keep = better[:, None, :, None]
        best_val_out = torch.where(keep, val_out, best_val_out)
        best_test_out = torch.where(keep, test_out, best_test_out)
        history["train_loss"].append(total / n_train / bank.n_probes)
        history["val_loss"].append(float(val_losses.mean()))
    return ProbeResult(
        task=task,
        metrics=bank.metrics(best_test_out, y["test"]),
        val_metrics=bank.metrics(best_val_out, y["val"]),
        best_epoch=best_epoch,
        chance=_chance(task, y),
        history=history,
    )


def _chance(task: str, y: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`(H,)` majority-class test accuracy, or (regression) the test MSE of predicting the train mean."""
    if task == "regression":
        return (y["test"] - y["train"].mean(0)).double().square().mean(0)
    return torch.stack(
        [torch.bincount(y["test"][:, h].long()).max().double() / y["test"].shape[0] for h in range(y["test"].shape[1])]
    )


def fit_direction_probe(
    z: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 300, weight_decay: float = 1e-3
) -> dict[str, Any]:
    r"""
    One binary logistic-regression probe on standardised `z` (full batch, Adam, the positive class re-weighted to
    balance a one-vs-rest label), trained on 80 % and tested on 20 %: its weight is an edit direction.

    [`fit_linear_probes`] reports the metrics of a bank of probes; this returns the one probe itself.

    Returns:
        `dict` with `weight` `(d,)` (in standardised space, the direction [`~diti_hf.DiTiPipeline.edit`] expects
        with `z_std=std`), `mean`, `std`, `train_accuracy`, `test_accuracy` and `test_average_precision`.
    """
    z, y = z.float(), labels.float()
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))
    n_train = max(1, int(0.8 * len(z)))
    train, test = order[:n_train], order[n_train:]
    mean, std = z[train].mean(0), z[train].std(0, unbiased=False).clamp_min(1e-6)
    x = (z - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=0.05)
    pos_weight = (1 - y[train].mean()) / y[train].mean().clamp_min(1e-6)
    for _ in range(steps):
        logits = x[train] @ w + b
        loss = F.binary_cross_entropy_with_logits(logits, y[train], pos_weight=pos_weight)
        loss = loss + weight_decay * w.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = x @ w + b

    def acc(idx: torch.Tensor) -> float | None:
        return float(accuracy((scores[idx] > 0).float(), y[idx])) if len(idx) else None

    ap = float(average_precision(scores[test], y[test])) if len(test) and y[test].any() else None
    return {
        "weight": w.detach(),
        "mean": mean,
        "std": std,
        "train_accuracy": acc(train),
        "test_accuracy": acc(test),
        "test_average_precision": ap,
    }


def split_indices(
    num_items: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, torch.Tensor]:
    """A seeded random train/val/test partition of `range(num_items)` with the given fractions."""
    n_train, n_val, n_test = split_sizes(num_items, fractions)
    if n_train < 1 or n_val < 1 or n_test < 1:
        raise ValueError(f"`num_items`={num_items} is too small for splits {tuple(fractions)}.")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def split_sizes(num_items: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[int, int, int]:
    """The train/val/test sizes [`split_indices`] gives `num_items` items (any of them may be 0 when too few)."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"`fractions` must be 3 positive numbers summing to 1, got {tuple(fractions)}.")
    n_train, n_val = int(round(num_items * fractions[0])), int(round(num_items * fractions[1]))
    return n_train, n_val, num_items - n_train - n_val
