"""The demo's report: the headline numbers per model, report.json and report.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, FULL_REPORT_SECTIONS, ORACLE_SECTIONS, OUTPUT_FILES, DemoConfig

# The rows of report.md's metrics table: (label, key of the summary).
_METRICS = [
    ("probe mean accuracy", "probe_mean_accuracy"),
    ("probe mean AP", "probe_mean_average_precision"),
    ("alignment Spearman (t vs granularity)", "alignment_spearman"),
    ("counterfactual targeted flip rate", "counterfactual_targeted_flip_rate"),
    ("counterfactual leakage", "counterfactual_leakage"),
    ("DCI disentanglement", "disentanglement_dci_disentanglement"),
    ("DCI completeness", "disentanglement_dci_completeness"),
    ("DCI informativeness (accuracy)", "disentanglement_dci_informativeness"),
    ("MIG", "disentanglement_mig"),
    ("SAP", "disentanglement_sap"),
    ("FactorVAE score", "disentanglement_factor_vae"),
    ("reconstruction MSE", "reconstruction_mse"),
    ("reconstruction PSNR (dB)", "reconstruction_psnr"),
    ("reconstruction SSIM", "reconstruction_ssim"),
]


def write_report(report: dict[str, Any], out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Writes report.json and report.md; returns the report as written (JSON-safe)."""
    from ..evaluation import json_safe

    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    log(f"wrote {', '.join(OUTPUT_FILES)} to {out} in {report['seconds']['total']:.0f} s")
    log("seconds per section: " + ", ".join(f"{name} {s:.1f}" for name, s in report["seconds"].items()))
    if report["full_report"]:
        full = report["full_report"]
        log(f"not run by the demo: {', '.join(full['not_run'])}; the full report: {full['command']}")
    return report


def full_report(config: DemoConfig) -> dict[str, Any]:
    """What the demo did not run and the `diti-hf evaluate` command line of the full report on its models."""
    command = f"diti-hf evaluate --model {config.model or DEFAULT_MODEL}"
    if config.baseline:
        command += f" --baseline {config.baseline}"
    oracle = [] if config.evaluate_counterfactual else [ORACLE_SECTIONS]
    return {"not_run": [*oracle, *FULL_REPORT_SECTIONS], "command": command + " --output-dir outputs/evaluate"}


def summarize(evaluation: dict, reconstruction: dict, names: list[str]) -> dict[str, dict[str, Any]]:
    """Headline numbers per model (DiTi and PDAE side by side), from the evaluation report."""
    summary = {}
    for name, entry in evaluation["models"].items():
        alignment = entry.get("alignment") or {}
        counterfactual = entry.get("counterfactual") or {}
        rec = entry.get("reconstruction") or reconstruction.get(name) or {}
        summary[name] = {
            "num_chunks": entry.get("num_chunks"),
            "feature_dim": entry.get("feature_dim"),
            "probe_mean_accuracy": entry["probe"]["mean_accuracy"],
            "probe_mean_average_precision": entry["probe"]["mean_average_precision"],
            "alignment_spearman": alignment.get("spearman_timestep_vs_granularity"),
            "counterfactual_targeted_flip_rate": counterfactual.get("targeted_flip_rate"),
            "counterfactual_leakage": counterfactual.get("leakage"),
            **{
                f"disentanglement_{key}": (entry.get("disentanglement") or {}).get(key)
                for key in (
                    "dci_disentanglement",
                    "dci_completeness",
                    "dci_informativeness",
                    "mig",
                    "sap",
                    "factor_vae",
                )
            },
            "reconstruction_mse": rec.get("mse") if name in names else None,
            "reconstruction_psnr": rec.get("psnr") if name in names else None,
            "reconstruction_ssim": rec.get("ssim") if name in names else None,
        }
    return summary


def _factor_table(evaluation: dict) -> list[str]:
    """Per factor: granularity, the DDPM's attribute-loss time and each partitioned model's decodable time-step."""
    aligned = {n: e["alignment"] for n, e in evaluation["models"].items() if e.get("alignment")}
    factors = evaluation["dataset"]["factors"]
    loss_times = any(f.get("ddpm_attribute_loss_time") is not None for f in factors)  # measured (--counterfactual)
    header = ["factor", "granularity", *["DDPM attribute-loss t"] * loss_times, *[f"{n} decodable t" for n in aligned]]
    lines = ["", "## Factors", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for factor in factors:
        name = factor["name"]
        cells = [name, _fmt(factor.get("granularity"))]
        cells += [_fmt_t(factor.get("ddpm_attribute_loss_time"))] * loss_times
        cells += [_fmt_t(a["decodable_timestep"].get(name)) for a in aligned.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _partition_text(partition: dict) -> str:
    """The partition in one phrase: dims, chunks, time-steps and stages."""
    text = (
        f"z of {partition['latent_dim']} dims in {partition['num_chunks']} chunks over "
        f"T = {partition['num_train_timesteps']} time-steps"
    )
    if partition.get("stages"):
        text += f", stages {partition['stages']} with {partition['dims_per_stage']} dims"
    return text


def _fmt_t(value: Any) -> str:
    """A time-step cell of the factor table."""
    return "—" if value is None else f"{float(value):.0f}"


def _fmt(value: Any) -> str:
    """A metric cell: floats to 3 decimals, missing as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metrics_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The metrics table, one column per model: only the metrics this run measured (the demo leaves the
    disentanglement metrics to `diti-hf evaluate`)."""
    names = list(summary)
    metrics = [(label, key) for label, key in _METRICS if any(summary[n][key] is not None for n in names)]
    lines = ["## Metrics", "", "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in metrics:
        lines.append(f"| {label} | " + " | ".join(_fmt(summary[n][key]) for n in names) + " |")
    return lines


def _markdown(report: dict) -> str:
    """report.md: the run, the parity check (interim), the metrics per model, the factors, the edit and the files."""
    lines = ["# diti-hf demo", ""]
    if report["notice"]:
        lines += [f"**{report['notice']}**", ""]
    lines += [
        f"- model: `{report['model']}`" + (f", baseline: `{report['baseline']}`" if report["baseline"] else ""),
        f"- partition: {_partition_text(report['partition'])}",
        f"- swaps: late chunks t ∈ {report['swap_ranges']['coarse']}, early chunks t ∈ "
        f"{report['swap_ranges']['fine']}",
        f"- DDIM steps: {report['config']['steps']}; run time {report['seconds']['total']:.0f} s",
        "",
    ]
    if report["parity"]:
        lines += ["## Parity with the official implementation (fixture, float32)", ""]
        lines += ["| quantity | max abs error | tolerance | ok |", "|---|---|---|---|"]
        for name, entry in report["parity"].items():
            lines.append(f"| {name} | {entry['max_abs_error']:.2e} | {entry['tolerance']:.0e} | {entry['ok']} |")
        lines.append("")
    lines += _metrics_table(report["summary"])
    if report.get("full_report"):
        lines += [
            "",
            f"Reconstruction metrics: the {report['reconstruction']['diti']['num_images']} images of "
            f"`reconstruction.png`. Not run here: {', '.join(report['full_report']['not_run'])}; "
            f"`{report['full_report']['command']}` writes the full report.",
        ]
    samples = report["evaluation"].get("ddpm_samples")
    if samples:
        lines += [
            "",
            f"Frozen DDPM: {samples['valid_fraction']:.0%} of {samples['num_samples']} unconditional samples "
            f"({samples['num_inference_steps']} DDIM steps) read with confidence ≥ {samples['confidence']} on every "
            "factor by the oracle (a strong base model reaches ≥ 90 %).",
        ]
    lines += _factor_table(report["evaluation"])
    edit = report["edit"]
    lines += [
        "",
        f"Edit: logistic probe `{edit['factor']} == {edit['class']}` on z (test accuracy "
        f"{_fmt(edit['probe']['test_accuracy'])}, AP {_fmt(edit['probe']['test_average_precision'])}), "
        f"scales {edit['scales']}.",
        "",
        "## Files",
        "",
        "- `reconstruction.png`: inputs (top) over reconstructions (bottom)",
        "- `swap_coarse.png` / `swap_fine.png`: sources (rows) × targets (columns) with the late / early time-step "
        "chunks taken from the target (named after DiTi's hypothesis that these carry coarse / fine attributes)",
        "- `interpolation.png`: A | interpolations α = 0 … 1 | B, late chunks (top row) and early chunks (bottom row)",
        "- `edit.png`: input, then one column per edit scale",
        "- `alignment_heatmap.png`: factors × chunks probe accuracy (evaluation module); `evaluation/` holds every plot",
        "- `report.json`: everything above, with the full evaluation report",
        "",
    ]
    return "\n".join(lines)
