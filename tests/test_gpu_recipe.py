"""The one-command training recipe (experiments/gpu-recipe/run.sh), run unchanged on a CPU with a tiny budget."""

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DITI_SLOW") != "1", reason="trains two rows for a minute; DITI_SLOW=1")
def test_recipe_exports_one_tarball_per_row_within_its_budget(tmp_path):
    from diti_hf import DiTiPipeline

    out = tmp_path / "out"
    env = {**os.environ, "WORK": str(tmp_path / "work"), "NUM_IMAGES": "96", "BATCH": "8", "WORKERS": "0",
           "THREADS": "1", "PYTHON": sys.executable}  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "experiments/gpu-recipe/run.sh", str(out), "1", "interval", "pdae"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert elapsed < (1 + 2) * 60, elapsed
    assert sorted(p.name for p in out.iterdir()) == ["interval.tgz", "pdae.tgz", "throughput.log"]
    log = (out / "throughput.log").read_text()
    assert log.count("exit 0: stopped at the time budget") == 2 and "images seen" in log
    for row, mask_mode, num_chunks in (("interval", "interval", 16), ("pdae", "cumulative", 1)):
        tarball = out / f"{row}.tgz"
        assert tarball.stat().st_size < 16 << 20
        with tarfile.open(tarball) as archive:
            names = archive.getnames()
            assert not any("/unet" in n or "/checkpoint-" in n for n in names)
            archive.extractall(tmp_path / "x", filter="data")
        folder = tmp_path / "x" / row
        shutil.copytree(ROOT / "experiments" / "ddpm-shapes32-v3" / "small32-v-40000" / "unet", folder / "unet")
        pipe = DiTiPipeline.from_pretrained(folder)
        assert pipe.partition.mask_mode == mask_mode and pipe.partition.num_chunks == num_chunks
        assert (folder / "train.log").is_file() and (folder / "training_summary.json").is_file()
