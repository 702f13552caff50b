"""Sharded, resumable feature extraction (`diti_hf.features`, `diti-hf encode --output-dir`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import tiny_images, tiny_pipeline
from diti_hf.cli import main
from diti_hf.data import BadImageError
from diti_hf.features import MANIFEST_NAME, extract_features, load_features, shard_name

NUM_IMAGES, SHARD, BATCH = 200, 20, 10

# `diti-hf encode` with one thread (as this process: same kernels, same floats) and an optional sleep before every
# encoder batch, so that a test can kill it in the middle of the run.
RUNNER = """
import os, sys, time
import torch
torch.set_num_threads(1)
from diti_hf.pipelines.pipeline_diti import DiTiPipeline
delay = float(os.environ.get("ENCODE_DELAY", "0"))
original = DiTiPipeline.encode
def slow_encode(self, *args, **kwargs):
    time.sleep(delay)
    return original(self, *args, **kwargs)
DiTiPipeline.encode = slow_encode
from diti_hf.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    pipe.save_pretrained(path)
    return path


def _encode_args(model_dir, output_dir, *extra):
    return [
        "encode",
        "--model",
        str(model_dir),
        "--dataset",
        "diti-shapes",
        "--num-images",
        str(NUM_IMAGES),
        "--output-dir",
        str(output_dir),
        "--shard-size",
        str(SHARD),
        "--batch-size",
        str(BATCH),
        "--no-progress",
        *extra,
    ]


def _check_shards(output_dir: Path, seen: set) -> None:
    """Every file named like a shard is a whole one (loadable, full rows); records the names seen."""
    for path in sorted(output_dir.glob("shard-*.npy")):
        array = np.load(path)
        index = int(path.stem.split("-")[1])
        expected = min(SHARD, NUM_IMAGES - index * SHARD)
        assert array.shape == (expected, 16), (path.name, array.shape)
        seen.add(path.name)


def _run_and_kill(argv, env, output_dir: Path, kill_when_shards: int, seen: set, timeout: float = 240.0) -> int:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if output_dir.is_dir():
                _check_shards(output_dir, seen)
            if len(list(output_dir.glob("shard-*.npy"))) >= kill_when_shards:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        rc = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert rc == -signal.SIGKILL, f"the run was not killed mid-way (rc={rc}): {stderr[-2000:]}"
    return rc


def test_killed_encode_resumes_to_the_uninterrupted_result(model_dir, tmp_path):
    reference = tmp_path / "reference"
    assert main(_encode_args(model_dir, reference)) == 0
    ref_z, ref_meta = load_features(reference)
    assert ref_z.shape == (NUM_IMAGES, 16) and ref_meta["ids"] == [str(i) for i in range(NUM_IMAGES)]

    out = tmp_path / "killed"
    env = {**os.environ, "ENCODE_DELAY": "0.1"}
    seen: set = set()
    # killed once a second shard file appears: the first is committed by then (its manifest entry is written before
    # the second shard's 0.2 s of encoding), the second may or may not be
    _run_and_kill(_encode_args(model_dir, out), env, out, kill_when_shards=2, seen=seen)
    _check_shards(out, seen)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert not manifest["complete"] and not (out / "features.npy").exists()
    listed = [entry["file"] for entry in manifest["shards"]]
    assert listed == [shard_name(i) for i in range(len(listed))] and 1 <= len(listed) < NUM_IMAGES // SHARD
    # shards on disk but not (yet) in the manifest are whole too; at most the one being committed
    on_disk = sorted(p.name for p in out.glob("shard-*.npy"))
    assert on_disk[: len(listed)] == listed and len(on_disk) <= len(listed) + 1
    first_inode = os.stat(out / shard_name(0)).st_ino

    resumed = subprocess.run(
        [sys.executable, "-c", RUNNER, *_encode_args(model_dir, out, "--resume")],
        env={**os.environ, "ENCODE_DELAY": "0"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed after {len(listed)} complete shards" in resumed.stdout
    assert os.stat(out / shard_name(0)).st_ino == first_inode  # a completed shard is not recomputed
    _check_shards(out, seen)
    z, meta = load_features(out)
    assert np.abs(z - ref_z).max() <= 1e-6
    assert meta["ids"] == ref_meta["ids"] and meta["num_features"] == NUM_IMAGES
    assert json.loads((out / MANIFEST_NAME).read_text())["complete"] is True
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert len(seen) == NUM_IMAGES // SHARD


def test_crash_while_writing_a_shard_leaves_no_complete_looking_file(pipe, tmp_path, monkeypatch):
    images = tiny_images(50, seed=3)
    expected = pipe.encode(images, batch_size=4).z.numpy()
    out = tmp_path / "feats"
    original_save = np.save
    calls = {"n": 0}

    def dying_save(file, array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third shard: half its bytes reach the disk, then the process "dies"
            file.write(b"\x93NUMPY" + b"\0" * 40)
            raise KeyboardInterrupt
        return original_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        extract_features(pipe, images, out, shard_size=10, batch_size=4, progress=False)
    monkeypatch.setattr(np, "save", original_save)
    assert sorted(p.name for p in out.glob("shard-*.npy")) == [shard_name(0), shard_name(1)]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [e["rows"] for e in manifest["shards"]] == [10, 10] and not manifest["complete"]
    # what a kill -9 in the middle of a write leaves behind: a temporary file, never a shard name
    (out / f".tmp-99999-{shard_name(2)}").write_bytes(b"\x93NUMPY partial")

    with pytest.raises(ValueError, match=r"continue it with `resume=True`"):
        extract_features(pipe, images, out, shard_size=10, batch_size=4, progress=False)
    result = extract_features(pipe, images, out, shard_size=10, batch_size=4, resume=True, progress=False)
    assert result.resumed_shards == 2 and result.num_shards == 5 and result.num_features == 50
    z, meta = load_features(result.output)
    # batches never straddle shards, so every batch is the one an uninterrupted run computes
    assert np.abs(z - expected).max() <= 1e-6
    assert meta["ids"] == [str(i) for i in range(50)] and meta["latent_dim"] == 16
    assert not list(out.glob(".tmp-*"))


def test_resume_checks_settings_and_recomputes_damaged_shards(pipe, tmp_path):
    images = tiny_images(30, seed=5)
    out = tmp_path / "feats"
    first = extract_features(pipe, images, out, shard_size=8, batch_size=8, progress=False)
    z_first, _ = load_features(out)
    with pytest.raises(ValueError, match=r"settings differ.*shard_size: 8 → 16"):
        extract_features(pipe, images, out, shard_size=16, batch_size=8, resume=True, progress=False)
    # a complete run resumed again only returns
    again = extract_features(pipe, images, out, shard_size=8, batch_size=8, resume=True, progress=False)
    assert again.resumed_shards == 4 and again.output == first.output
    (out / shard_name(2)).write_bytes(b"garbage")  # damaged after the fact
    repaired = extract_features(pipe, images, out, shard_size=8, batch_size=8, resume=True, progress=False)
    assert repaired.resumed_shards == 2 and repaired.num_shards == 4
    z, _ = load_features(out)
    assert np.array_equal(z, z_first) and np.load(out / shard_name(2)).shape == (8, 16)


def test_bad_images_are_named_or_skipped_and_parquet_output(pipe, tmp_path):
    files = []
    for i, array in enumerate(((tiny_images(4, seed=9) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()):
        files.append(tmp_path / f"im{i}.png")
        PIL.Image.fromarray(array).save(files[-1])
    (tmp_path / "im2.png").write_bytes(b"not a png")  # the third file is corrupt
    with pytest.raises(BadImageError, match=r"image 2 \(.*im2\.png.*pass skip_bad_images=True to skip"):
        extract_features(pipe, files, tmp_path / "strict", shard_size=3, batch_size=2, progress=False)
    result = extract_features(
        pipe,
        files,
        tmp_path / "lenient",
        shard_size=3,
        batch_size=2,
        skip_bad_images=True,
        output_format="parquet",
        metadata={"model": "tiny"},
        progress=False,
    )
    assert result.output.name == "features.parquet" and result.num_features == 3
    assert [s["index"] for s in result.skipped] == [2] and "im2.png" in result.skipped[0]["path"]
    z, meta = load_features(result.output)
    good = [PIL.Image.open(files[i]).convert("RGB") for i in (0, 1, 3)]
    expected = torch.cat([pipe.encode(good[:2]).z, pipe.encode(good[2:]).z]).numpy()  # the shards' batches
    assert np.abs(z - expected).max() <= 1e-6
    assert meta["ids"] == [str(files[i]) for i in (0, 1, 3)] and meta["paths"] == meta["ids"]
    assert meta["model"] == "tiny" and meta["skipped"][0]["index"] == 2 and meta["num_features"] == 3
