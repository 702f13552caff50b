"""The ablation tables of benchmarks/results/modularity.md from report.json files written by `examples/evaluate.py`: one
markdown row per DiTi/PDAE model, with the numbers the modularity targets are judged on.

    python benchmarks/shapes32-v2/ablation_table.py REPORT_DIR_OR_JSON [...]

Columns: targeted flip rate, leakage, selectivity (their difference), the factors some range controls cleanly (and
whether two disjoint ranges do), late-range control (see `late_range_control`), the alignment Spearman, the linear-probe mean accuracy, the regeneration keep-rates
with the model's own `z` and the follow-rate with another image's `z` (means over factors, at each noise level), and
the reconstruction PSNR.
"""

import json
import sys
from pathlib import Path

import numpy as np


def _mean_per_level(table: dict[str, list[float]]) -> str:
    levels = np.asarray(list(table.values()), dtype=float)
    return "/".join(f"{x:.2f}" for x in np.nanmean(levels, axis=0))


def late_range_control(swaps: dict, loss_time: dict, max_other_change: float = 0.2, late: int = 500) -> str:
    r"""
    The largest flip rate of a factor the frozen DDPM loses at `t ≥ late` by a swapped range inside `[late, T)`, among
    the ranges where every other factor changes in at most `max_other_change` of its differing pairs; with the factor
    and the range. "—" when no late factor is moved that cleanly by any late range.
    """
    names, ranges = swaps["factors"], swaps["ranges"]
    flip, change = np.asarray(swaps["flip_rate"], float), 1.0 - np.asarray(swaps["stay_rate"], float)
    best = None
    for r, (lo, _) in enumerate(ranges):
        if lo < late:
            continue
        for f, name in enumerate(names):
            if loss_time.get(name) is None or loss_time[name] < late or np.isnan(flip[f, r]):
                continue
            others = [change[g, r] for g in range(len(names)) if g != f and not np.isnan(change[g, r])]
            if max(others, default=0.0) <= max_other_change and (best is None or flip[f, r] > best[0]):
                best = (flip[f, r], name, ranges[r])
    return "—" if best is None else f"{best[0]:.2f} ({best[1]}, [{best[2][0]}, {best[2][1]}))"


def rows(report: dict, source: str) -> list[str]:
    loss_time = (report.get("attribute_loss") or {}).get("loss_time") or {}
    out = []
    for name, model in report["models"].items():
        swaps = model.get("counterfactual")
        if not swaps:
            continue
        targets = report.get("targets", {}).get(name, {})
        control = targets.get("clean_control") or {}
        spearman = (targets.get("alignment") or {}).get("spearman")
        regen = model.get("regeneration") or {}
        recon = model.get("reconstruction") or {}
        clean = f"{control.get('count', '—')}{' (2 groups)' if control.get('disjoint_groups') else ''}"
        out.append(
            "| "
            + " | ".join(
                [
                    f"{name} ({source})",
                    f"{swaps['targeted_flip_rate']:.2f}",
                    f"{swaps['leakage']:.2f}",
                    f"{swaps['selectivity']:.2f}",
                    clean,
                    late_range_control(swaps, loss_time) if loss_time else "—",
                    "—" if spearman is None else f"{spearman:.2f}",
                    f"{model['probe']['mean_accuracy']:.3f}",
                    _mean_per_level(regen["keep_own"]) if "keep_own" in regen else "—",
                    _mean_per_level(regen["follow_other"]) if "follow_other" in regen else "—",
                    f"{recon['psnr']:.1f}" if "psnr" in recon else "—",
                ]
            )
            + " |"
        )
    return out


def main(paths: list[str]) -> None:
    print(
        "| model | targeted flip | leakage | selectivity | cleanly controlled | late-range control | alignment Spearman"
        " | probe mean acc | keep own z (t = 250/500/750/999) | follow other z | recon PSNR |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        path = Path(path)
        file = path / "report.json" if path.is_dir() else path
        for row in rows(json.loads(file.read_text()), file.parent.name):
            print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
