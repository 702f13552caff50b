"""The models shipped in `pretrained/`: they load strictly, fit the size budget, share one frozen DDPM, and their
cards carry exactly the numbers of the recorded evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from diti_hf import DiTiPipeline
from diti_hf.hub import metrics_from_report

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = ROOT / "pretrained"
REPORT = ROOT / "benchmarks" / "shapes32" / "report.json"
SHIPPED = {"diti": ("diti-shapes32", 16), "pdae": ("pdae-shapes32", 1)}

pytestmark = pytest.mark.skipif(
    not (PRETRAINED / "diti-shapes32").is_dir(), reason="no trained model shipped in pretrained/ yet"
)


def test_shipped_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert total <= 25 * 2**20, f"pretrained/ holds {total / 2**20:.1f} MiB, over the 25 MiB budget"


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_shipped_pipeline_loads_and_shares_the_base_ddpm(model):
    name, num_chunks = SHIPPED[model]
    pipe = DiTiPipeline.from_pretrained(PRETRAINED / name)
    assert pipe.partition.num_chunks == num_chunks and pipe.partition.latent_dim == 64
    # DiTi and PDAE were trained against the same frozen DDPM: bit-identical UNet weights
    base = load_file(PRETRAINED / "ddpm-shapes32" / "unet" / "diffusion_pytorch_model.safetensors")
    ours = load_file(PRETRAINED / name / "unet" / "diffusion_pytorch_model.safetensors")
    assert base.keys() == ours.keys() and all(torch.equal(base[k], ours[k]) for k in base)
    z = pipe.encode(torch.zeros(2, 3, 32, 32)).z
    assert z.shape == (2, 64) and torch.isfinite(z).all()


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_shipped_cards_match_the_report(model):
    name, num_chunks = SHIPPED[model]
    card_text = (PRETRAINED / name / "README.md").read_text()
    assert (ROOT / "model_cards" / f"diti-hf--{name}.md").read_text() == card_text
    card = ModelCard(card_text)
    assert card.data.library_name == "diti_hf" and card.data.pipeline_tag == "image-feature-extraction"
    expected = metrics_from_report(json.loads(REPORT.read_text()), model=model)
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == pytest.approx(expected) and len(results) >= 4
    summary = json.loads((PRETRAINED / name / "training_summary.json").read_text())
    assert f"--max_train_steps {summary['global_step']}" in card_text
    assert f"--num_chunks {num_chunks}" in card_text
