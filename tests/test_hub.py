"""Model card generation and Hub upload (`diti_hf.hub`), the upload against a local stand-in for the Hub API."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub.constants
import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from conftest import tiny_images, tiny_pipeline
from diti_hf import DiTiEncoderModel, DiTiPipeline, TimestepPartition
from diti_hf.hub import (
    MODEL_CARD_TAGS,
    create_model_card,
    metrics_from_report,
    partition_rows,
    push_pipeline_to_hub,
    save_model_card,
)

TOKEN = "hf_test"


@pytest.fixture(scope="module")
def pipe() -> DiTiPipeline:
    return tiny_pipeline()


def staged_pipeline(pipe: DiTiPipeline) -> DiTiPipeline:
    """`pipe` with an encoder whose 16 dims are staged: 4 dims for t < 500 (2 chunks), 12 for t >= 500 (2 chunks)."""
    encoder = DiTiEncoderModel(
        sample_size=16,
        block_out_channels=(32, 32),
        attention_stages=(1,),
        latent_dim=16,
        num_chunks=4,
        stages=[500, 1000],
        dims_per_stage=[4, 12],
    ).eval()
    return DiTiPipeline(unet=pipe.unet, encoder=encoder, decoder=pipe.decoder, scheduler=pipe.scheduler)


def assert_same_weights(a: DiTiPipeline, b: DiTiPipeline) -> None:
    for component in ("unet", "encoder", "decoder"):
        ours, theirs = getattr(a, component).state_dict(), getattr(b, component).state_dict()
        assert ours.keys() == theirs.keys(), component
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), component
    public = [{k: v for k, v in p.scheduler.config.items() if not k.startswith("_")} for p in (a, b)]
    assert public[0] == public[1]


def python_blocks(content: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", content, flags=re.S)


# ---------------------------------------------------------------------------------------------------- card content
def test_card_metadata_without_metrics(pipe):
    card = create_model_card(pipe, repo_id="me/diti-tiny", datasets="me/shapes")
    data = card.data.to_dict()
    assert data == {
        "datasets": ["me/shapes"],
        "library_name": "diti_hf",
        "license": "apache-2.0",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["diti", "diffusers", "representation-learning", "image-feature-extraction", "unsupervised"],
    }
    assert data["tags"] == MODEL_CARD_TAGS
    # The card parses back (huggingface_hub's own metadata parser, strict on model-index) to the same metadata.
    assert ModelCard(str(card)).data.to_dict() == data
    assert card.content.startswith("---\n")
    # No numbers invented: no results section or table without metrics, no training/eval sections without commands.
    for absent in ("model-index", "## Evaluation", "Results on", "| Metric |", "## Training"):
        assert absent not in card.content
    assert "# diti-tiny\n" in card.content
    assert "| Representation `z` | 16 dims in 4 chunks (uniform partition over T = 1000 time-steps) |" in card.content
    assert "| Input images | 16×16, 3 channels, pixels in [-1, 1] |" in card.content
    encoder_params = sum(p.numel() for p in pipe.encoder.parameters())
    assert f"| `encoder` | `DiTiEncoderModel`, {encoder_params:,} (" in card.content
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    assert f"| `unet` (frozen DDPM) | `UNet2DModel`, {unet_params:,} (" in card.content
    assert "arXiv" in card.content and "2401.11430" in card.content and "ICLR" in card.content
    assert "## Limitations" in card.content


def test_card_usage_snippets_name_the_repo(pipe):
    card = create_model_card(pipe, repo_id="me/diti-tiny")
    blocks = python_blocks(card.content)
    assert len(blocks) == 2
    assert 'DiTiPipeline.from_pretrained("me/diti-tiny")' in blocks[0]
    for call in ("pipe.encode(", "pipe.swap(", "pipe.interpolate("):
        assert call in blocks[0]
    assert 'DiTiEncoderModel.from_pretrained("me/diti-tiny", subfolder="encoder")' in blocks[1]
    # Without a repo id the snippet uses a placeholder and the title a neutral name.
    default = create_model_card(pipe)
    assert 'DiTiPipeline.from_pretrained("path/or/hub-id")' in default.content
    assert "# DiTi model\n" in default.content


def test_card_snippets_run_against_a_saved_pipeline(pipe, tmp_path, monkeypatch):
    """The usage snippets are valid code for this API: run them with a local folder in place of the repo id."""
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    card = create_model_card(pipe, repo_id=str(folder))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        PIL.Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(name)
    pipeline_block, encoder_block = python_blocks(card.content)
    assert pipeline_block.count("num_inference_steps=50") == 2
    pipeline_block = pipeline_block.replace("num_inference_steps=50", "num_inference_steps=2")  # fast on CPU
    scope: dict = {}
    exec(compile(pipeline_block, "card-pipeline-snippet", "exec"), scope)
    assert tuple(scope["enc"].z.shape) == (2, 16)
    assert tuple(scope["coarse"].shape) == (2, 8)  # t in [500, 1000) is chunks 2-3, dims [8, 16)
    assert torch.equal(scope["coarse"], scope["enc"].z[:, 8:])
    assert scope["swapped"].size == (16, 16)
    assert len(scope["row"]) == 3
    scope = {}
    exec(compile(encoder_block, "card-encoder-snippet", "exec"), scope)
    assert tuple(scope["z"].shape) == (4, 16)
    assert torch.equal(scope["coarse"], scope["z"][:, 8:])
    assert torch.equal(scope["encoder"].proj_out.weight, pipe.encoder.proj_out.weight)


def test_partition_table_uniform(pipe):
    card = create_model_card(pipe)
    table = "| Chunks | Time-steps `t` | Dims of `z` | Dims per chunk |\n|---|---|---|---|\n| 0–3 | [0, 1000) | [0, 16) | 4 |"
    assert table in card.content
    # Uneven uniform split: floor(10 (i + 1) / 4) = 2, 5, 7, 10 -> one row per chunk.
    rows = partition_rows(TimestepPartition(latent_dim=10, num_chunks=4))
    assert [(r["chunks"], r["timesteps"], r["dims"], r["width"]) for r in rows] == [
        ((0, 1), (0, 250), (0, 2), 2),
        ((1, 2), (250, 500), (2, 5), 3),
        ((2, 3), (500, 750), (5, 7), 2),
        ((3, 4), (750, 1000), (7, 10), 3),
    ]
    assert partition_rows(TimestepPartition(latent_dim=512, num_chunks=64)) == [
        {"stage": None, "chunks": (0, 64), "timesteps": (0, 1000), "dims": (0, 512), "width": 8}
    ]


def test_partition_table_staged(pipe):
    card = create_model_card(staged_pipeline(pipe))
    assert "(staged partition over T = 1000 time-steps)" in card.content
    table = (
        "| Stage | Chunks | Time-steps `t` | Dims of `z` | Dims per chunk |\n|---|---|---|---|---|\n"
        "| 0 (t < 500) | 0–1 | [0, 500) | [0, 4) | 2 |\n"
        "| 1 (t < 1000) | 2–3 | [500, 1000) | [4, 16) | 6 |"
    )
    assert table in card.content
    # docs/method.md §5 example: widths 2,2,2,4 | 8,8,9 | 12x25 then 27 | 11x8 then 12 | 31x1 then 19.
    example = TimestepPartition(512, 64, 1000, [50, 100, 300, 500, 1000], [10, 25, 327, 100, 50])
    rows = [(r["stage"], r["chunks"], r["width"]) for r in partition_rows(example)]
    assert rows == [
        (0, (0, 3), 2),
        (0, (3, 4), 4),
        (1, (4, 6), 8),
        (1, (6, 7), 9),
        (2, (7, 19), 25),
        (2, (19, 20), 27),
        (3, (20, 31), 8),
        (3, (31, 32), 12),
        (4, (32, 63), 1),
        (4, (63, 64), 19),
    ]
    last = partition_rows(example)[-1]
    assert last["timesteps"] == (985, 1000) and last["dims"] == (493, 512)


def test_card_pdae_and_preprocessing(pipe):
    from diti_hf import DiTiImageProcessor

    assert "PDAE baseline" not in create_model_card(pipe).content
    pdae = tiny_pipeline(num_chunks=1)
    pdae.register_modules(image_processor=DiTiImageProcessor(resolution=16, crop_box=[2, 4, 20, 20]))
    content = create_model_card(pdae).content
    assert "16 dims in 1 chunk (uniform partition" in content
    assert "it is the PDAE baseline" in content
    assert "| 0 | [0, 1000) | [0, 16) | 16 |" in content
    assert "`DiTiImageProcessor`: crop 20×20 at top=2, left=4, then resize to 16×16 (bilinear)" in content
    assert "| Preprocessing of PIL / numpy images | shorter side resized to 16, centre crop 16×16 |" in (
        create_model_card(pipe).content
    )


def test_card_metrics_go_to_model_index(pipe):
    metrics = {"probe_mean_accuracy": 0.8125, "reconstruction_psnr": 24.5}
    card = create_model_card(
        pipe,
        repo_id="me/diti-tiny",
        datasets=["me/shapes"],
        metrics=metrics,
        eval_split="test",
        training_command="accelerate launch examples/train_diti.py --max_train_steps 10",
        eval_command="python examples/evaluate.py --model me/diti-tiny",
        extra_sections={"Training data": "Synthetic shapes, 32×32."},
    )
    data = card.data.to_dict()
    assert data["model-index"] == [
        {
            "name": "diti-tiny",
            "results": [
                {
                    "task": {"type": "image-feature-extraction"},
                    "dataset": {"name": "me/shapes", "type": "me/shapes", "split": "test"},
                    "metrics": [
                        {"type": "probe_mean_accuracy", "value": 0.8125, "name": "probe_mean_accuracy"},
                        {"type": "reconstruction_psnr", "value": 24.5, "name": "reconstruction_psnr"},
                    ],
                }
            ],
        }
    ]
    # huggingface_hub's own model-index parser round-trips it; the raw YAML holds the same numbers.
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "diti-tiny"
    assert {r.metric_type: r.metric_value for r in results} == metrics
    assert {(r.dataset_type, r.dataset_split, r.task_type) for r in results} == {
        ("me/shapes", "test", "image-feature-extraction")
    }
    reparsed = ModelCard(str(card))
    assert {r.metric_type: r.metric_value for r in reparsed.data.eval_results} == metrics
    raw = yaml.safe_load(str(card).split("---\n")[1])
    assert raw["model-index"][0]["results"][0]["metrics"][1]["value"] == 24.5
    assert "Results on me/shapes (test split):" in card.content
    assert "| `probe_mean_accuracy` | 0.8125 |\n| `reconstruction_psnr` | 24.5 |" in card.content
    assert "```bash\naccelerate launch examples/train_diti.py --max_train_steps 10\n```" in card.content
    assert "```bash\npython examples/evaluate.py --model me/diti-tiny\n```" in card.content
    assert "## Training data\n\nSynthetic shapes, 32×32.\n" in card.content
    assert card.content.index("## Training data") < card.content.index("## Limitations")


def test_card_base_model(pipe):
    card = create_model_card(pipe, base_model="google/ddpm-cifar10-32")
    assert card.data.to_dict()["base_model"] == "google/ddpm-cifar10-32"
    assert "from [`google/ddpm-cifar10-32`](https://huggingface.co/google/ddpm-cifar10-32)" in card.content
    assert "base_model" not in create_model_card(pipe).data.to_dict()
    # A UNet loaded from a Hub id records it in `_name_or_path`: that becomes the base model.
    fresh = tiny_pipeline()
    fresh.unet.register_to_config(_name_or_path="google/ddpm-celebahq-256")
    assert create_model_card(fresh).data.base_model == "google/ddpm-celebahq-256"
    with pytest.raises(ValueError, match="base_model"):
        create_model_card(pipe, base_model="not a repo")


def test_card_rejects_bad_metrics(pipe):
    with pytest.raises(ValueError, match="probe_ap"):
        create_model_card(pipe, datasets=["me/shapes"], metrics={"probe_ap": float("nan")})
    with pytest.raises(ValueError, match="flag"):
        create_model_card(pipe, datasets=["me/shapes"], metrics={"flag": True})
    with pytest.raises(ValueError, match="eval_dataset"):
        create_model_card(pipe, metrics={"probe_ap": 0.5})
    card = create_model_card(pipe, metrics={"probe_ap": 0.5}, eval_dataset="synthetic shapes")
    assert card.data.eval_results[0].dataset_name == "synthetic shapes"
    assert "datasets" not in card.data.to_dict()


def test_metrics_from_report():
    report = {
        "models": {
            "diti": {
                "probe": {"mean_accuracy": 0.75, "mean_average_precision": 0.5},
                "alignment": {"spearman_timestep_vs_granularity": None},
                "reconstruction": {"mse": 0.01, "psnr": float("inf"), "ssim": 0.9},
            },
            "pixels": {"probe": {"mean_accuracy": 0.25}, "alignment": None},
        }
    }
    assert metrics_from_report(report, "diti") == {
        "probe_mean_accuracy": 0.75,
        "probe_mean_average_precision": 0.5,
        "reconstruction_mse": 0.01,
        "reconstruction_ssim": 0.9,
    }
    assert metrics_from_report(report, "pixels") == {"probe_mean_accuracy": 0.25}
    with pytest.raises(ValueError, match="'pdae'"):
        metrics_from_report(report, "pdae")


def test_save_model_card_writes_readme(pipe, tmp_path):
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    path = save_model_card(pipe, tmp_path, repo_id="me/diti-tiny", datasets=["me/shapes"])
    assert path == tmp_path / "README.md"
    loaded = ModelCard.load(path)
    expected = create_model_card(pipe, repo_id="me/diti-tiny", datasets=["me/shapes"])
    assert loaded.data.to_dict() == expected.data.to_dict()
    assert loaded.content.strip() == expected.content.strip()
    # The folder still loads as a pipeline with the card in it, with the same weights.
    reloaded = DiTiPipeline.from_pretrained(tmp_path)
    assert_same_weights(reloaded, pipe)
    with pytest.raises(ValueError, match="folder"):
        save_model_card(pipe, tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------- Hub stand-in
class HubStandIn:
    """
    The part of the Hub HTTP API that `create_repo`, `create_branch` and `upload_folder` use, on 127.0.0.1.

    Every file is answered with upload mode "regular", so contents arrive base64-encoded in the commit's NDJSON (no
    LFS or xet transfer). Requests without `Authorization: Bearer hf_test` get 401; unknown routes get 404 and are
    recorded in `unexpected`. A watchdog stops the server after `max_seconds` whatever happens.
    """

    def __init__(self, max_seconds: float = 120.0):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.user_agents: list[str] = []
        self.auth: list[str | None] = []
        self.validated: list[str] = []
        self.commits: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                stand_in._handle(self, "GET")

            def do_POST(self):
                stand_in._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(max_seconds, self.server.shutdown)
        self.watchdog.daemon = True

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    # ------------------------------------------------------------------ request handling
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        self.requests.append((method, path))
        self.user_agents.append(handler.headers.get("user-agent", ""))
        self.auth.append(handler.headers.get("authorization"))
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._reply(handler, 401, {"error": "Invalid credentials in Authorization header"})
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(handler, json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(handler, json.loads(body))
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if method == "POST" and match:
            repo_id, action, revision = match.groups()
            if repo_id not in self.repos:
                return self._reply(handler, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            branches = self.repos[repo_id]["branches"]
            if action == "branch":
                if revision in branches:
                    return self._reply(handler, 409, {"error": "Reference already exists"})
                branches[revision] = dict(branches["main"])
                return self._reply(handler, 200, {})
            if revision not in branches:
                return self._reply(
                    handler, 404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
                )
            if action == "preupload":
                files = json.loads(body)["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(handler, 200, {"files": answer})
            return self._commit(handler, repo_id, revision, body)
        self.unexpected.append((method, path))
        return self._reply(handler, 404, {"error": f"stand-in: no route {method} {path}"})

    def _reply(self, handler, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _create_repo(self, handler, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
        if repo_id in self.repos:
            # Like the Hub: 409 with the existing repo's URL, which `create_repo(exist_ok=True)` returns.
            return self._reply(
                handler, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            )
        self.repos[repo_id] = {"visibility": payload.get("visibility"), "branches": {"main": {}}}
        return self._reply(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, handler, payload: dict) -> None:
        self.validated.append(payload["content"])
        parts = payload["content"].split("---\n")
        metadata = yaml.safe_load(parts[1]) if payload["content"].startswith("---\n") and len(parts) > 2 else None
        if not isinstance(metadata, dict):
            return self._reply(handler, 400, {"errors": [{"message": "no YAML metadata"}], "warnings": []})
        return self._reply(handler, 200, {"errors": [], "warnings": []})

    def _commit(self, handler, repo_id: str, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        assert header["key"] == "header"
        files = self.repos[repo_id]["branches"][revision]
        for op in operations:
            if op["key"] != "file" or op["value"].get("encoding") != "base64":
                return self._reply(handler, 400, {"error": f"stand-in accepts inline base64 files only, got {op}"})
            files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append({"repo_id": repo_id, "revision": revision, "summary": header["value"]["summary"]})
        url = f"{self.url}/{repo_id}/commit/{oid}"
        return self._reply(handler, 200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # even when the suite runs offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with HubStandIn() as stand_in:
        yield stand_in


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_pipeline_to_hub_uploads_the_saved_pipeline(pipe, hub, tmp_path):
    url = push_pipeline_to_hub(
        pipe, "test-org/diti-tiny", token=TOKEN, endpoint=hub.url, card_kwargs={"datasets": ["test-org/shapes"]}
    )
    assert hub.unexpected == []
    assert set(hub.auth) == {f"Bearer {TOKEN}"}
    assert all("diti_hf/0.1.0" in agent for agent in hub.user_agents)
    assert hub.commits == [{"repo_id": "test-org/diti-tiny", "revision": "main", "summary": "Upload DiTi pipeline"}]
    assert re.fullmatch(re.escape(f"{hub.url}/test-org/diti-tiny/commit/") + "[0-9a-f]{40}", url)
    assert hub.repos["test-org/diti-tiny"]["visibility"] is None

    uploaded = hub.files("test-org/diti-tiny")
    for name in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "encoder/config.json",
        "encoder/diffusion_pytorch_model.safetensors",
        "decoder/config.json",
        "decoder/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "README.md",
    ):
        assert name in uploaded, name
    # Exactly the files of save_pretrained (byte for byte) plus the card.
    local = tmp_path / "local"
    pipe.save_pretrained(local, safe_serialization=True)
    expected = local_files(local)
    assert set(uploaded) == set(expected) | {"README.md"}
    for name, content in expected.items():
        assert uploaded[name] == content, name
    assert json.loads(uploaded["model_index.json"])["encoder"] == ["diti_hf.models.encoder", "DiTiEncoderModel"]

    # The card was validated by the Hub before upload and names the repo in its snippets.
    readme = uploaded["README.md"].decode()
    assert hub.validated == [readme]
    card = ModelCard(readme)
    assert card.data.library_name == "diti_hf" and card.data.datasets == ["test-org/shapes"]
    assert 'DiTiPipeline.from_pretrained("test-org/diti-tiny")' in readme

    # A pipeline rebuilt from the uploaded files is the same model: bit-identical weights, and the same encodings as
    # the pipeline loaded from the local save (bit for bit) and as the original (to float rounding: weights loaded
    # from safetensors are not 64-byte aligned, which changes the CPU GEMM kernel for some batch sizes).
    rebuilt = tmp_path / "rebuilt"
    for name, content in uploaded.items():
        (rebuilt / name).parent.mkdir(parents=True, exist_ok=True)
        (rebuilt / name).write_bytes(content)
    loaded = DiTiPipeline.from_pretrained(rebuilt)
    assert_same_weights(loaded, pipe)
    from_local = DiTiPipeline.from_pretrained(local)
    for n in (1, 2):
        images = tiny_images(n)
        z = loaded.encode(images).z
        assert torch.equal(z, from_local.encode(images).z)
        torch.testing.assert_close(z, pipe.encode(images).z, rtol=0, atol=1e-6)


def test_pipeline_push_to_hub_method(pipe, hub):
    """`DiTiPipeline.push_to_hub` delegates to `push_pipeline_to_hub`: branch, message, privacy, existing repo."""
    url = pipe.push_to_hub("test-org/diti-method", token=TOKEN, endpoint=hub.url, private=True)
    assert url.startswith(f"{hub.url}/test-org/diti-method/commit/")
    assert hub.repos["test-org/diti-method"]["visibility"] == "private"
    first = hub.files("test-org/diti-method")
    assert "unet/diffusion_pytorch_model.safetensors" in first and "README.md" in first

    # Second push to the now existing repo, on a new branch, with a custom message and card.
    url = pipe.push_to_hub(
        "test-org/diti-method",
        token=TOKEN,
        endpoint=hub.url,
        revision="dev",
        commit_message="Second upload",
        card_kwargs={"model_name": "DiTi tiny", "metrics": {"probe_mean_accuracy": 0.5}, "eval_dataset": "shapes"},
    )
    assert hub.unexpected == []
    assert [c["revision"] for c in hub.commits] == ["main", "dev"]
    assert hub.commits[1]["summary"] == "Second upload"
    assert ("POST", "/api/models/test-org/diti-method/branch/dev") in hub.requests
    dev = hub.files("test-org/diti-method", "dev")
    assert set(dev) == set(first)
    assert dev["encoder/diffusion_pytorch_model.safetensors"] == first["encoder/diffusion_pytorch_model.safetensors"]
    card = ModelCard(dev["README.md"].decode())
    assert card.data.model_name == "DiTi tiny"
    assert card.data.eval_results[0].metric_value == 0.5
    assert hub.files("test-org/diti-method")["README.md"] == first["README.md"]  # main untouched


def test_push_to_hub_resolves_the_namespace(pipe, hub):
    """A bare repo name goes to the token's namespace, and the card's snippets use the full id."""
    pipe.push_to_hub("diti-solo", token=TOKEN, endpoint=hub.url)
    readme = hub.files("test-user/diti-solo")["README.md"].decode()
    assert 'DiTiPipeline.from_pretrained("test-user/diti-solo")' in readme
    assert "# diti-solo\n" in readme


def test_push_to_hub_errors(pipe, hub):
    for bad in ("a/b/c", "bad repo", "", None):
        with pytest.raises(ValueError, match="repo_id"):
            push_pipeline_to_hub(pipe, bad, token=TOKEN, endpoint=hub.url)
    with pytest.raises(ValueError, match="'a/b/c'"):
        pipe.push_to_hub("a/b/c", token=TOKEN, endpoint=hub.url)
    with pytest.raises(ValueError, match="create_pr"):
        pipe.push_to_hub("test-org/x", token=TOKEN, endpoint=hub.url, revision="dev", create_pr=True)
    with pytest.raises(ValueError, match="commit_message"):
        pipe.push_to_hub("test-org/x", token=TOKEN, endpoint=hub.url, commit_message=" ")
    with pytest.raises(ValueError, match="probe_ap"):
        pipe.push_to_hub("test-org/x", token=TOKEN, endpoint=hub.url, card_kwargs={"metrics": {"probe_ap": "high"}})
    assert hub.requests == []  # rejected before any request
    # A wrong token is refused by the server and nothing is created.
    with pytest.raises(Exception, match="401"):
        pipe.push_to_hub("test-org/x", token="hf_wrong", endpoint=hub.url)
    assert hub.repos == {}
