"""Writes the cards of the shipped demo models, `pretrained/diti-shapes32` and `pretrained/pdae-shapes32`.

Every number comes from the evaluation report (`benchmarks/shapes32/report.json`, made by the command in
`EVAL_COMMAND`) and from the training summaries saved next to the weights; the verdicts against the evaluation targets
are computed by `diti_hf.evaluation.check_targets`, never typed by hand. Each card goes to `model_cards/` and, as
`README.md`, into the model folder.
Run: python model_cards/make_shapes32_cards.py
"""

from __future__ import annotations

import json
from pathlib import Path

from diti_hf import DiTiPipeline
from diti_hf.hub import create_model_card, metrics_from_report

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "benchmarks" / "shapes32" / "report.json"
MODELS = {"diti": "diti-shapes32", "pdae": "pdae-shapes32"}
COMMON_TRAINING = """# launch 1: 1,000 steps, cosine schedule from 5e-4 to 0; a constant EMA of 0.999 (--no-ema_warmup)
python examples/train_diti.py --pretrained_unet pretrained/ddpm-shapes32 --dataset_name diti-shapes \\
  --num_train_images 20000 --resolution 32 --encoder_preset small32 --latent_dim 64 --num_chunks {num_chunks} \\
  --train_batch_size 32 --max_train_steps 1000 --learning_rate 5e-4 --lr_scheduler cosine --lr_warmup_steps 50 \\
  --ema_decay 0.999 --no-ema_warmup --num_threads 1 --checkpointing_steps 100 --checkpoints_total_limit 2 \\
  --validation_steps 0 --seed 0 --output_dir runs/{name}
# launch 2 (and every restart after an interruption): the same command with
#   --max_train_steps 4000 --resume_from_checkpoint latest
# it continues from step 1,000; the cosine schedule is refitted to 4,000 steps (lr back to 3.9e-4 at step 1,250)
# launch 3: the same command with --max_train_steps {steps} --resume_from_checkpoint latest, from step 4,000
# (the schedule refitted again: lr 1.6e-4 at step 4,000, decaying to 0 at {steps})"""
EVAL_COMMAND = """OMP_NUM_THREADS=1 python examples/evaluate.py --model diti=pretrained/diti-shapes32 \\
  --model pdae=pretrained/pdae-shapes32 --output_dir benchmarks/shapes32 --num_images 2000 \\
  --num_inference_steps 20 --num_swap_pairs 32 --num_reconstruction_images 16 --num_attribute_loss_images 64"""


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def targets_section(report: dict, model: str) -> str:
    """The evaluation targets, met or not, from the report's `targets` entry (DiTi only)."""
    check = report["targets"][model]
    lines = [
        "| target | measured | met |",
        "|---|---|---|",
        f"| time-step alignment: Spearman(decodable t, granularity) ≥ {check['targets']['min_spearman']} "
        f"| {check['alignment']['spearman']:.2f} | {'yes' if check['alignment']['met'] else 'no'} |",
    ]
    if check.get("probe"):
        probe = check["probe"]
        lines.append(
            f"| probe mean accuracy ≥ {probe['baseline']}'s ({probe['baseline_mean_accuracy']:.3f}) "
            f"| {probe['mean_accuracy']:.3f} | {'yes' if probe['met'] else 'no'} |"
        )
    for factor, swap in (check["swaps"] or {}).items():
        lines.append(
            f"| a t-range swap flips `{factor}` ≥ {_pct(check['targets']['min_flip'])} with every other factor "
            f"changing < {_pct(check['targets']['max_other_change'])} | {'passing' if swap['met'] else 'most-flipping'} "
            f"range [{swap['range'][0]}, {swap['range'][1]}): flip "
            f"{_pct(swap['flip'])}, `{swap['worst_other_factor']}` changes {_pct(swap['worst_other_change'])} "
            f"| {'yes' if swap['met'] else 'no'} |"
        )
    control = check.get("clean_control")
    if control:
        controlled = [
            f"`{f}` by {', '.join(f'[{lo}, {hi})' for lo, hi in r)}" for f, r in control["by_factor"].items() if r
        ]
        lines.append(
            f"| clean control: ≥ {check['targets']['min_clean_factors']} factors each flipped by some range while "
            "every factor it does not flip changes ≤ 20 %, by two disjoint ranges "
            f"| {control['count']} factors{': ' + '; '.join(controlled) if controlled else ''} "
            f"| {'yes' if control['met'] else 'no'} |"
        )
    return "\n".join(lines)


def budget_section(name: str) -> str:
    summary = json.loads((ROOT / "pretrained" / name / "training_summary.json").read_text())
    steps, batch = summary["global_step"], summary["global_batch_size"]
    return (
        f"{steps:,} steps × {batch} = {steps * batch:,} training images (the paper: 38M on 4×A100), on 2 shared CPU "
        "cores with one thread per run; DiTi and PDAE had the same frozen DDPM (`pretrained/ddpm-shapes32`), data, "
        "seed and budget. This is a demonstration model: far below the paper's budget, and its numbers say so."
    )


def main() -> list[Path]:
    report = json.loads(REPORT.read_text())
    written = []
    for model, name in MODELS.items():
        folder = ROOT / "pretrained" / name
        pipe = DiTiPipeline.from_pretrained(folder)
        summary = json.loads((folder / "training_summary.json").read_text())
        sections = {"Training budget": budget_section(name)}
        if model in report.get("targets", {}):
            sections["Against the evaluation targets"] = targets_section(report, model)
        card = create_model_card(
            pipe,
            repo_id=f"diti-hf/{name}",
            datasets=["diti-shapes"],
            metrics=metrics_from_report(report, model=model),
            eval_dataset="diti-shapes",
            eval_split="test (400 of 2,000 generated images, seed 0)",
            training_command=COMMON_TRAINING.format(
                num_chunks=pipe.partition.num_chunks, steps=summary["global_step"], name=name
            ),
            eval_command=EVAL_COMMAND,
            extra_sections=sections,
        )
        for path in (ROOT / "model_cards" / f"diti-hf--{name}.md", folder / "README.md"):
            card.save(path)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
