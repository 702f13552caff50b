"""The bars a time-step-modular model is held to, and the check of an evaluation report against them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Targets:
    r"""
    The bars a time-step-modular model is held to.

    Args:
        min_spearman (`float`, defaults to 0.8): Spearman correlation between each factor's decodable time-step and
            its granularity.
        min_flip (`float`, defaults to 0.7): A swap of some t-range must move the factor to `B`'s class this often…
        max_other_change (`float`, defaults to 0.2): …while every other factor leaves `A`'s class less often than this.
        min_clean_factors (`int`, defaults to 4): Factors that some range must control cleanly (see
            [`clean_control`]), with at least two disjoint ranges doing so.
    """

    min_spearman: float = 0.8
    min_flip: float = 0.7
    max_other_change: float = 0.2
    min_clean_factors: int = 4


def clean_control(
    flip: np.ndarray,
    change: np.ndarray,
    factor_names: Sequence[str],
    ranges: Sequence[Sequence[int]],
    targets: Targets | None = None,
) -> dict[str, Any]:
    r"""
    Which factors a swap controls cleanly. Range `r` *flips* factor `f` when `flip[f, r] ≥ min_flip`; it controls
    each factor it flips cleanly when every factor it does not flip changes in at most `max_other_change` of its
    differing pairs (`change = 1 − stay`; factors without differing pairs are ignored). A group of factors may thus
    move together, as long as nothing else moves.

    Args:
        flip, change (`np.ndarray`): `(F, R)` flip rates and change rates.
        factor_names (`list[str]`): The `F` factors.
        ranges (`list[(lo, hi)]`): The `R` swapped time-step ranges.
        targets ([`Targets`], *optional*): `min_flip` and `max_other_change`.

    Returns:
        `dict` with `by_factor` (factor → the ranges controlling it cleanly), `by_range` (one entry per range: the
        factors it flips, whether that is clean), `count` (factors controlled cleanly by some range) and
        `disjoint_groups` (whether two disjoint ranges each control a factor cleanly, e.g. a fine and a coarse group).
    """
    targets = targets or Targets()
    flip, change = np.asarray(flip, dtype=float), np.asarray(change, dtype=float)
    by_range, by_factor = [], {name: [] for name in factor_names}
    for r, (lo, hi) in enumerate(ranges):
        flipped = [f for f in range(len(factor_names)) if flip[f, r] >= targets.min_flip]  # NaN compares False
        rest = [change[g, r] for g in range(len(factor_names)) if g not in flipped and not math.isnan(change[g, r])]
        worst = max(rest, default=0.0)
        clean = bool(flipped) and bool(worst <= targets.max_other_change)
        worst = float(worst)
        by_range.append(
            {"range": [int(lo), int(hi)], "flips": [factor_names[f] for f in flipped], "worst_other_change": worst,
             "clean": clean}
        )  # fmt: skip
        if clean:
            for f in flipped:
                by_factor[factor_names[f]].append([int(lo), int(hi)])
    clean_ranges = [e["range"] for e in by_range if e["clean"]]
    disjoint = any(a[1] <= b[0] or b[1] <= a[0] for i, a in enumerate(clean_ranges) for b in clean_ranges[i + 1 :])
    return {
        "by_factor": by_factor,
        "by_range": by_range,
        "count": sum(bool(v) for v in by_factor.values()),
        "disjoint_groups": bool(disjoint),
    }


def check_targets(
    report: Mapping[str, Any], model: str, baseline: str | None = None, targets: Targets | None = None
) -> dict[str, Any]:
    r"""
    Checks one model of an [`evaluate_pipeline`] report against [`Targets`] (the numbers come from the report; nothing
    depends on the particular factors).

    Per factor `f`, the swap check passes when some range `r` has `flip[f, r] ≥ min_flip` while every other factor's
    change rate `1 − stay[g, r]` is `< max_other_change`; it reports the first such range, or else the range that
    flips `f` most.

    Args:
        report (`dict`): The report (or parsed `report.json`).
        model (`str`): The model checked (a partitioned model: DiTi).
        baseline (`str`, *optional*): The model whose probe mean accuracy `model` must match or beat (PDAE).
        targets ([`Targets`], *optional*): The bars; [`Targets`]' defaults when not given.

    Returns:
        `dict` with `alignment`, `swaps` (per factor: range, flip, worst other factor and its change rate, `met`),
        `probe` and `all_met`. A check whose inputs are missing from the report has `met: None`.
    """
    targets = targets or Targets()
    models = report.get("models", {})
    if model not in models or (baseline is not None and baseline not in models):
        raise ValueError(
            f"`model`={model!r} / `baseline`={baseline!r} must be in the report's models {sorted(models)}."
        )
    entry = models[model]
    result: dict[str, Any] = {"targets": asdict(targets)}

    spearman = (entry.get("alignment") or {}).get("spearman_timestep_vs_granularity")
    result["alignment"] = {
        "spearman": spearman,
        "met": None if spearman is None else bool(spearman >= targets.min_spearman),
    }

    counterfactual = entry.get("counterfactual")
    if counterfactual:
        flip = np.asarray(counterfactual["flip_rate"], dtype=float)  # (F, R)
        change = 1.0 - np.asarray(counterfactual["stay_rate"], dtype=float)
        names, ranges = counterfactual["factors"], counterfactual["ranges"]
        swaps = {}
        for f, name in enumerate(names):
            other_names = [n for g, n in enumerate(names) if g != f]
            others = np.nan_to_num(np.delete(change, f, axis=0), nan=0.0)  # (F-1, R)
            worst = others.max(0) if other_names else np.zeros(len(ranges))
            passing = (flip[f] >= targets.min_flip) & (worst < targets.max_other_change)  # NaN compares False
            r = int(passing.argmax()) if passing.any() else int(np.nan_to_num(flip[f], nan=-1.0).argmax())
            unknown = math.isnan(flip[f, r])  # no pair differs in this factor
            swaps[name] = {
                "range": list(ranges[r]),
                "flip": None if unknown else float(flip[f, r]),
                "worst_other_factor": other_names[int(others[:, r].argmax())] if other_names else None,
                "worst_other_change": float(worst[r]),
                "met": None if unknown else bool(passing[r]),
            }
        result["swaps"] = swaps
        result["swaps_met"] = sum(bool(s["met"]) for s in swaps.values())
        control = clean_control(flip, change, names, ranges, targets)
        control["met"] = bool(control["count"] >= targets.min_clean_factors and control["disjoint_groups"])
        result["clean_control"] = control
    else:
        result["swaps"], result["swaps_met"], result["clean_control"] = None, None, None

    if baseline is not None:
        ours = (entry.get("probe") or {}).get("mean_accuracy")
        theirs = (models[baseline].get("probe") or {}).get("mean_accuracy")
        met = None if ours is None or theirs is None else bool(ours >= theirs)
        result["probe"] = {"mean_accuracy": ours, "baseline": baseline, "baseline_mean_accuracy": theirs, "met": met}
    checks = [result["alignment"]["met"], *(s["met"] for s in (result["swaps"] or {}).values())]
    if result["clean_control"] is not None:
        checks.append(result["clean_control"]["met"])
    if baseline is not None:
        checks.append(result["probe"]["met"])
    result["all_met"] = None if any(c is None for c in checks) else all(checks)
    return result
