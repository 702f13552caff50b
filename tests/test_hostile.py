"""Hostile files and long jobs: resuming a checkpoint runs no code stored in it, corruption is detected (and repaired
where it can be), tiny inputs cannot make the library allocate gigabytes, NaN never passes silently, and every
expected failure of the command line is one line.

Each test reproduces one way the code before these checks went wrong. The memory tests run in one subprocess under
`resource.setrlimit(RLIMIT_AS)` (1 GiB above what the imports use) and must finish in seconds. The `*_CASES` lists
count the distinct hostile inputs tried.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURE_DIR, load_example, run_script_main, script_fails, tiny_images, tiny_pipeline
from conftest import reset_accelerate as _reset_accelerate
from diti_hf import DiTiPipeline
from diti_hf.cli import main as cli_main
from diti_hf.data.loading import BadImageError
from diti_hf.features import MANIFEST_NAME, extract_features, load_features, shard_name
from diti_hf.safe_io import FolderInUseError, file_record
from diti_hf.training.checkpointing import (
    COMPLETE_MARKER,
    CheckpointError,
    UntrustedCheckpointError,
    checkpoint_problems,
    list_checkpoints,
    load_checkpoint,
    load_state_file,
    resolve_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
train_ddpm = load_example("train_ddpm")


# ------------------------------------------------------------------------------------------------------ helpers
def _train(argv: list[str]) -> dict:
    return run_script_main(train_ddpm, argv)


def _train_fails(argv: list[str], capsys) -> str:
    """Runs train_ddpm.py's entry point; it must exit 2 with one line on stderr, which is returned."""
    return script_fails(train_ddpm, argv, capsys)


COMMON = ("--max_train_steps", "6", "--checkpointing_steps", "2", "--learning_rate", "1e-3")


def ddpm_argv(out: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", "diti-shapes",
        "--num_train_images", "32",
        "--resolution", "16",
        "--unet_preset", "tiny",
        "--block_out_channels", "16", "32",
        "--attention_levels", "1",
        "--train_batch_size", "8",
        "--num_threads", "1",
        "--validation_steps", "0",
        "--num_validation_images", "2",
        "--validation_inference_steps", "2",
        "--report_to", "none",
        "--output_dir", str(out),
        *COMMON,
        *extra,
    ]  # fmt: skip


def _assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=1e-6, atol=1e-7)


FINAL_UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Six uninterrupted train_ddpm steps: the reference every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    _train(ddpm_argv(out))
    return out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """The same run stopped after four steps, with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("stopped")
    _train(ddpm_argv(out, "--stop_after_steps", "4"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def to_earlier_format(checkpoint: Path) -> None:
    """Rewrites a checkpoint the way diti_hf wrote them before content hashes: pickled states, a marker without
    `format` and `files`."""
    for path in checkpoint.glob("process_state_*.safetensors"):
        torch.save(load_state_file(path), path.with_suffix(".pt"))
        path.unlink()
    for path in checkpoint.glob("custom_state_*.safetensors"):
        index = path.stem.rsplit("_", 1)[1]
        torch.save(load_state_file(path), checkpoint / f"custom_checkpoint_{index}.pkl")
        path.unlink()
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({k: marker[k] for k in ("step", "num_processes", "time")}))


class _RunsCommand:
    """Unpickling this runs a shell command: the classic payload of a shared checkpoint."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _payload(marker: Path) -> _RunsCommand:
    return _RunsCommand(f"touch {shlex.quote(str(marker))}")


def _rehash(checkpoint: Path) -> None:
    """Rewrites the marker's file list to match the folder, as someone altering a checkpoint can."""
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    marker["files"] = {
        p.relative_to(checkpoint).as_posix(): file_record(p)
        for p in sorted(checkpoint.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps(marker))


# ------------------------------------------------------------------------------- resuming runs no stored code
PICKLE_CASES = ["process_state_0.pt", "custom_checkpoint_0.pkl"]


@pytest.mark.parametrize("victim", PICKLE_CASES)
def test_a_crafted_pickle_in_a_checkpoint_is_refused_and_runs_nothing(stopped_run, tmp_path, capsys, victim):
    out = _copy(stopped_run, tmp_path)
    checkpoint = out / "checkpoint-4"
    to_earlier_format(checkpoint)
    marker = tmp_path / "pwned"
    torch.save({"state": _payload(marker)}, checkpoint / victim)

    line = _train_fails(ddpm_argv(out, "--resume_from_checkpoint", "latest"), capsys)
    assert "checkpoint-4" in line and "--trust_checkpoint" in line and "pickles" in line
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(object(), checkpoint)  # the library refuses before touching the accelerator
    assert not marker.exists()


def test_a_crafted_accelerate_file_with_matching_hashes_runs_nothing(stopped_run, tmp_path, capsys):
    """Hashes detect accidents, not an attacker who rewrites the marker: what is loaded still runs no code."""
    out = _copy(stopped_run, tmp_path)
    checkpoint = out / "checkpoint-4"
    marker = tmp_path / "pwned"
    for name in ("optimizer.bin", "random_states_0.pkl"):
        torch.save({"state": _payload(marker)}, checkpoint / name)
    _rehash(checkpoint)
    assert checkpoint_problems(checkpoint) == []
    line = _train_fails(ddpm_argv(out, "--resume_from_checkpoint", "latest"), capsys)
    assert "checkpoint-4" in line and "does not fit this run" in line
    assert not marker.exists()


def test_earlier_format_checkpoint_resumes_exactly_with_trust_checkpoint(straight_run, stopped_run, tmp_path, capsys):
    """A long job started before this format resumes with --trust_checkpoint, bit-for-bit, and continues safely."""
    out = _copy(stopped_run, tmp_path)
    shutil.rmtree(out / "checkpoint-4")
    to_earlier_format(out / "checkpoint-2")
    line = _train_fails(ddpm_argv(out, "--resume_from_checkpoint", "latest"), capsys)
    assert "checkpoint-2" in line and "--trust_checkpoint" in line

    summary = _train(ddpm_argv(out, "--resume_from_checkpoint", "latest", "--trust_checkpoint"))
    assert summary["global_step"] == 6 and summary["images_this_launch"] == 4 * 8
    _assert_same_weights(out / FINAL_UNET, straight_run / FINAL_UNET)
    later = out / "checkpoint-6"
    assert checkpoint_problems(later) == [] and (later / "custom_state_0.safetensors").is_file()
    assert not list(later.glob("process_state_*.pt")) and not list(later.glob("custom_checkpoint_*.pkl"))


# ------------------------------------------------------------------------------ damaged checkpoints are found
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(straight_run, stopped_run, tmp_path, capsys):
    out = _copy(stopped_run, tmp_path)
    weights = out / "checkpoint-4" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:-90] = b"\xff" * 10  # ten bytes of one weight become NaN: still a loadable file
    weights.write_bytes(bytes(data))

    capsys.readouterr()
    summary = _train(ddpm_argv(out, "--resume_from_checkpoint", "latest"))
    printed = capsys.readouterr().out
    assert "checkpoint-4" in printed and "model.safetensors" in printed and "resuming from checkpoint-2" in printed
    assert summary["global_step"] == 6 and summary["images_this_launch"] == 4 * 8
    _assert_same_weights(out / FINAL_UNET, straight_run / FINAL_UNET)  # nothing of the damaged file carried over
    assert (out / ".damaged-checkpoint-4").is_dir()  # set aside, not pruned in place of a good one
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert checkpoint_problems(out / "checkpoint-4") == []


class _TinyAccelerated:
    def __init__(self, tmp_path: Path):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from diti_hf.training.ema import make_ema

        _reset_accelerate()
        self.accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(tmp_path)))
        model = torch.nn.Linear(3, 2)
        self.ema = make_ema(model.parameters(), 0.9)
        self.model, self.optimizer = self.accelerator.prepare(model, torch.optim.Adam(model.parameters()))
        self.accelerator.register_for_checkpointing(self.ema)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# (id, damage(checkpoint folder), what the report must name)
DAMAGE_CASES = [
    ("flipped byte in the weights", lambda c: _flip(c / "model.safetensors"), "model.safetensors: content differs"),
    ("truncated optimizer state", lambda c: (c / "optimizer.bin").write_bytes(b"PK"), "optimizer.bin: 2 bytes"),
    ("deleted weights", lambda c: (c / "model.safetensors").unlink(), "model.safetensors: missing"),
    ("weights replaced by a .bin", lambda c: (c / "model.safetensors").rename(c / "pytorch_model.bin"), "pytorch_model.bin: not listed"),
    ("flipped byte in the EMA", lambda c: _flip(c / "custom_state_0.safetensors"), "custom_state_0.safetensors"),
    ("process state deleted", lambda c: (c / "process_state_0.safetensors").unlink(), "process_state_0.safetensors: missing"),
    ("marker not JSON", lambda c: (c / COMPLETE_MARKER).write_text("{"), "not valid JSON"),
    ("marker is a list", lambda c: (c / COMPLETE_MARKER).write_text("[]"), "not a checkpoint marker"),
    ("marker lists ../", lambda c: _edit_marker(c, lambda m: m["files"].update({"../x": m["files"]["optimizer.bin"]})), "not a file name inside"),
    ("marker of a newer format", lambda c: _edit_marker(c, lambda m: m.update(format=99)), "unknown checkpoint format"),
    ("weights swapped for a symlink", lambda c: _symlink_over(c / "model.safetensors"), "model.safetensors: a symbolic link"),
]  # fmt: skip


def _edit_marker(checkpoint: Path, edit) -> None:
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    edit(marker)
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps(marker))


def _symlink_over(path: Path) -> None:
    target = path.with_name("elsewhere.bin")
    path.rename(target)
    path.symlink_to(target)
    _edit_marker(path.parent, lambda m: m["files"].update({"elsewhere.bin": file_record(target)}))


@pytest.mark.parametrize(("case", "damage", "named"), DAMAGE_CASES, ids=[c[0] for c in DAMAGE_CASES])
def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path, case, damage, named):
    run = _TinyAccelerated(tmp_path)
    good = save_checkpoint(run.accelerator, tmp_path, 1, process_state={"step": 1, "rng": torch.arange(4)})
    with torch.no_grad():
        run.model.weight.add_(1.0)
    bad = save_checkpoint(run.accelerator, tmp_path, 2, process_state={"step": 2, "rng": torch.arange(4)})
    damage(bad)
    messages = []
    assert resolve_checkpoint("latest", tmp_path, log=messages.append) == good
    assert named in messages[0] and "checkpoint-2" in messages[0] and "checkpoint-1" in messages[-1]
    with pytest.raises(CheckpointError, match="checkpoint-2"):
        resolve_checkpoint(str(bad), tmp_path)  # a checkpoint named explicitly does not silently fall back
    with pytest.raises(CheckpointError, match="checkpoint-2"):
        load_checkpoint(run.accelerator, bad)
    damage(good)
    with pytest.raises(CheckpointError, match="no checkpoint in .* verifies.*checkpoint-2.*checkpoint-1"):
        resolve_checkpoint("latest", tmp_path)
    _reset_accelerate()


def test_checkpoint_state_files_hold_no_pickle_and_must_fit_the_run(tmp_path):
    run = _TinyAccelerated(tmp_path)
    state = {"step": 3, "window": (0.5, 2), "generator": torch.Generator().get_state(), "position": {"epoch": 1}}
    path = save_checkpoint(run.accelerator, tmp_path, 3, process_state=state)
    assert not list(path.glob("*.pt")) and not list(path.glob("custom_checkpoint_*"))
    marker, loaded = load_checkpoint(run.accelerator, path, process_state_like=state)
    assert loaded["window"] == (0.5, 2) and torch.equal(loaded["generator"], state["generator"])
    assert run.ema.optimization_step == 0 and len(run.ema.shadow_params) == 2
    # a state that does not have the live structure never reaches the objects
    for like, match in (
        ({**state, "step": 3.0}, "step should be a float"),
        ({**state, "generator": torch.zeros(7, dtype=torch.uint8)}, r"generator is torch.uint8 \(5056,\)"),
        ({**state, "extra": 1}, "should have keys"),
    ):
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(run.accelerator, path, process_state_like=like)
    # an EMA of another model (other shapes) is refused by name
    from diti_hf.training.ema import make_ema

    run.accelerator._custom_objects[0] = make_ema(torch.nn.Linear(5, 2).parameters(), 0.9)
    with pytest.raises(CheckpointError, match=r"custom_state_0.safetensors.*shadow_params\.0"):
        load_checkpoint(run.accelerator, path)
    _reset_accelerate()


def test_training_refuses_an_output_folder_another_run_holds(tmp_path, capsys):
    out = tmp_path / "busy"
    holder = _hold_lock(out)
    try:
        line = _train_fails(ddpm_argv(out), capsys)
        assert f"in use by PID {holder.pid}" in line and "--output_dir" in line
    finally:
        holder.kill()
        holder.wait()


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds `folder`'s lock the way diti_hf does (flock on `.lock`, its PID inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(
        """
        import fcntl, os, sys, time
        fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ------------------------------------------------------------------------------------------ feature extraction
@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


IMAGES = tiny_images(30, seed=5)


def _extract(pipe, out: Path, **kwargs):
    return extract_features(pipe, IMAGES, out, shard_size=8, batch_size=8, progress=False, **kwargs)


@pytest.fixture(scope="module")
def clean_features(pipe, tmp_path_factory) -> tuple[Path, np.ndarray]:
    out = tmp_path_factory.mktemp("features") / "clean"
    _extract(pipe, out)
    return out, load_features(out)[0]


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _flip_shard_rows(out: Path) -> None:
    path = out / shard_name(1)
    data = bytearray(path.read_bytes())
    start = _npy_data_offset(path)
    data[start : start + 64] = b"\xff" * 64  # 16 floats become NaN; the header (shape) stays valid
    path.write_bytes(bytes(data))


def _edit_manifest(out: Path, edit) -> None:
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    edit(manifest)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


def _outside_shard(out: Path) -> None:
    # a valid-looking shard outside the folder, named by the manifest
    np.save(out.parent / "outside.npy", np.full((8, 16), 7.0, np.float32))
    _edit_manifest(out, lambda m: m["shards"][1].update(file="../outside.npy"))


# (id, damage(output folder), shards kept on resume)
SHARD_CASES = [
    ("bytes flipped inside a shard", _flip_shard_rows, 1),
    ("a shard copied over another", lambda out: shutil.copy(out / shard_name(2), out / shard_name(1)), 1),
    ("manifest names a file outside the folder", _outside_shard, 1),
    ("an ids file emptied", lambda out: (out / "shard-00002.ids.json").write_text('{"ids": [], "paths": []}'), 2),
    ("a shard's header claims more rows", lambda out: np.save(out / shard_name(0), np.zeros((9, 16), np.float32)), 0),
    ("manifest entry is a list", lambda out: _edit_manifest(out, lambda m: m["shards"].__setitem__(2, [])), 2),
    ("manifest entry lacks its keys", lambda out: _edit_manifest(out, lambda m: m["shards"][3].clear()), 3),
    ("manifest hash removed", lambda out: _edit_manifest(out, lambda m: m["shards"][1]["file_record"].pop("sha256")), 1),
]  # fmt: skip


def _interrupt_before_merge(out: Path) -> None:
    # as if killed after the last shard: no merged output yet, so the merge would read the damaged shard
    _edit_manifest(out, lambda m: m.update(complete=False, output=None, output_files=None))
    for path in out.glob("features.*"):
        path.unlink()


@pytest.mark.parametrize("interrupted", [True, False], ids=["before the merge", "after the merge"])
@pytest.mark.parametrize(("case", "damage", "kept"), SHARD_CASES, ids=[c[0] for c in SHARD_CASES])
def test_a_damaged_shard_is_detected_and_recomputed(
    pipe, clean_features, tmp_path, caplog, case, damage, kept, interrupted
):
    clean, z_clean = clean_features
    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    damage(out)
    if interrupted:
        _interrupt_before_merge(out)
    with caplog.at_level("WARNING", logger="diti_hf.features"):
        repaired = _extract(pipe, out, resume=True)
    assert repaired.resumed_shards == kept and repaired.num_shards == 4
    assert f"recomputing from shard {kept} on" in caplog.text
    z, meta = load_features(out)
    assert np.array_equal(z, z_clean) and meta["num_features"] == 30


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_truncated_merged_output_is_refused_and_merged_again(pipe, tmp_path, caplog, fmt):
    out = tmp_path / "feats"
    _extract(pipe, out, output_format=fmt)
    z_clean, _ = load_features(out)
    merged = out / f"features.{fmt}"
    merged.write_bytes(merged.read_bytes()[:-200])
    with pytest.raises(ValueError, match=rf"does not verify \(features\.{fmt}: "):
        load_features(out)
    with caplog.at_level("WARNING", logger="diti_hf.features"):
        again = _extract(pipe, out, resume=True, output_format=fmt)
    assert again.resumed_shards == 4 and f"features.{fmt}" in caplog.text and "merging again" in caplog.text
    assert np.array_equal(load_features(out)[0], z_clean)


def test_the_merged_format_can_change_on_resume(pipe, clean_features, tmp_path):
    clean, z_clean = clean_features
    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    result = _extract(pipe, out, resume=True, output_format="parquet")
    assert result.output.name == "features.parquet" and result.resumed_shards == 4
    assert np.array_equal(load_features(out)[0], z_clean)


MANIFEST_CASES = [
    ("a list", "[]", "not a diti_hf feature manifest"),
    ("shards not a list", {"shards": {"0": 1}}, "`shards` is not a list"),
    ("settings missing", {"settings": None}, "`settings` is not an object"),
    ("too large", "x" * (17 * 2**20), "more than a feature manifest may have"),
]


@pytest.mark.parametrize(("case", "content", "match"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_a_malformed_manifest_is_one_clear_error(clean_features, tmp_path, capsys, case, content, match, model_dir):
    clean, _ = clean_features
    out = tmp_path / "feats"
    shutil.copytree(clean, out)
    if isinstance(content, dict):
        _edit_manifest(out, lambda m: m.update(content))
    else:
        (out / MANIFEST_NAME).write_text(content)
    image_dir = tmp_path / "images"
    _write_images(image_dir, 2)
    argv = ["encode", "--model", str(model_dir), "--images", str(image_dir), "--output-dir", str(out), "--resume"]
    assert cli_main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and MANIFEST_NAME in err[0]


def test_a_second_extraction_into_a_busy_folder_is_refused(pipe, tmp_path, capsys, model_dir):
    out = tmp_path / "feats"
    holder = _hold_lock(out)
    try:
        with pytest.raises(FolderInUseError, match=f"in use by PID {holder.pid}"):
            _extract(pipe, out)
        image_dir = tmp_path / "images"
        _write_images(image_dir, 2)
        argv = ["encode", "--model", str(model_dir), "--images", str(image_dir), "--output-dir", str(out)]
        assert cli_main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by PID {holder.pid}" in err[0]
        assert not (out / MANIFEST_NAME).exists()  # nothing of the other writer's folder was touched
    finally:
        holder.kill()
        holder.wait()
    assert _extract(pipe, out).num_features == 30  # the kernel dropped the dead holder's lock


def test_nan_features_are_never_written(pipe, tmp_path, monkeypatch):
    encoder = pipe.encoder
    original = type(encoder).forward

    def broken(self, images, return_dict=True):
        out = original(self, images, return_dict)
        out.z[1:3] = float("nan")
        return out

    monkeypatch.setattr(type(encoder), "forward", broken)
    with pytest.raises(ValueError, match=r"NaN or infinite features for 2 of 8 images.*'1'"):
        _extract(pipe, tmp_path / "feats")
    assert not list((tmp_path / "feats").glob("shard-*"))


def test_a_zero_size_image_is_a_bad_image(pipe, tmp_path):
    images = [PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)), PIL.Image.new("RGB", (0, 0))]
    with pytest.raises(BadImageError, match=r"image 1 .*no pixels"):
        extract_features(pipe, images, tmp_path / "strict", shard_size=4, progress=False)
    result = extract_features(pipe, images, tmp_path / "lenient", shard_size=4, skip_bad_images=True, progress=False)
    assert result.num_features == 1 and [s["index"] for s in result.skipped] == [1]
    assert "no pixels" in result.skipped[0]["error"]


# --------------------------------------------------------------------------------------- diti-hf encode (CLI)
@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "diti"
    pipe.save_pretrained(path)
    return path


def _write_images(folder: Path, n: int, names: list | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = ((tiny_images(n, seed=9) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    paths = []
    for i, array in enumerate(arrays):
        name = names[i] if names else f"img{i}.png"
        path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
        PIL.Image.fromarray(array).save(path, format="PNG")
        paths.append(path)
    return paths


def _encode(model_dir: Path, *argv: str) -> int:
    return cli_main(["encode", "--model", str(model_dir), "--no-progress", *argv])


def test_a_symlink_out_of_the_image_folder_is_a_skippable_bad_image(model_dir, tmp_path, capsys):
    images = tmp_path / "images"
    _write_images(images, 2)
    secret = tmp_path / "elsewhere" / "secret.png"
    _write_images(secret.parent, 1, ["secret.png"])
    (images / "link.png").symlink_to(secret)
    out = tmp_path / "z.npy"
    assert _encode(model_dir, "--images", str(images), "--output", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "link.png" in err[0] and "outside" in err[0]
    assert _encode(model_dir, "--images", str(images), "--output", str(out), "--skip-bad-images") == 0
    z, meta = load_features(out)
    assert z.shape == (2, 16) and meta["ids"] == ["img0.png", "img1.png"]
    assert [s["id"] for s in meta["skipped"]] == ["link.png"]


def test_a_non_utf8_file_name_is_stored_by_every_format(model_dir, tmp_path, capsys):
    images = tmp_path / "images"
    _write_images(images, 2, [b"caf\xe9.png", b"ok.png"])
    for fmt in ("parquet", "npy"):
        out = tmp_path / f"feats-{fmt}"
        assert _encode(model_dir, "--images", str(images), "--output-dir", str(out), "--format", fmt) == 0
        z, meta = load_features(out)
        assert z.shape == (2, 16) and meta["ids"] == ["caf\\xe9.png", "ok.png"]
    capsys.readouterr()


def test_nan_encoder_weights_stop_encode_with_one_line(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    weights = folder / "encoder" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["proj_out.weight"][0, :3] = float("nan")
    save_file(state, weights)
    images = tmp_path / "images"
    _write_images(images, 2)
    assert _encode(folder, "--images", str(images), "--output-dir", str(tmp_path / "feats")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "proj_out.weight" in err[0] and "3 NaN" in err[0]
    assert not (tmp_path / "feats" / "features.npy").exists()


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys, tmp_path):
    import diti_hf.cli as cli
    from diti_hf.commands import encode

    for error, code in ((RuntimeError("boom\nsecond line"), 1), (ZeroDivisionError("division by zero"), 1),
                        (MemoryError("cannot allocate"), 2), (KeyError("shards"), 1)):  # fmt: skip

        def fail(args, error=error):
            raise error

        monkeypatch.setattr(encode, "run", fail)
        argv = ["encode", "--model", "m", "--images", str(tmp_path), "--output", "z.npy"]
        assert cli.main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and type(error).__name__ in err[0] or "out of memory" in err[0]
        if code == 1:
            assert "--debug" in err[0]
            with pytest.raises(type(error)):
                cli.main(["--debug", *argv])


# ----------------------------------------------------------------------------------- pipeline folders and configs
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipe") / "diti"
    tiny_pipeline().save_pretrained(folder)
    return folder


def _json_edit(folder: Path, name: str, edit) -> None:
    path = folder / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _weights_edit(folder: Path, component: str, key_part: str) -> None:
    path = folder / component / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    key = sorted(k for k in state if key_part in k)[0]
    state[key].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    save_file(state, path)


# (id, edit(folder), regex of the one error)
FOLDER_CASES = [
    ("PNDMScheduler in model_index", lambda f: _json_edit(f, "model_index.json", lambda i: i.update(scheduler=["diffusers", "PNDMScheduler"])), r"scheduler.*DDIMScheduler"),
    ("AutoencoderKL as the encoder", lambda f: _json_edit(f, "model_index.json", lambda i: i.update(encoder=["diffusers", "AutoencoderKL"])), r"encoder.*DiTiEncoderModel"),
    ("a module of another library", lambda f: _json_edit(f, "model_index.json", lambda i: i.update(decoder=["os", "DiTiDecoderModel"])), r"decoder.*from diti_hf"),
    ("an extra component", lambda f: _json_edit(f, "model_index.json", lambda i: i.update(vae=["diffusers", "AutoencoderKL"])), r"unexpected component.*vae"),
    ("model_index is a list", lambda f: (f / "model_index.json").write_text("[]"), r"model_index.json: not a JSON object"),
    ("config.json not JSON", lambda f: (f / "unet" / "config.json").write_text("{'a': 1}"), r"unet/config.json: not valid JSON"),
    ("x0-prediction scheduler", lambda f: _json_edit(f, "scheduler/scheduler_config.json", lambda c: c.update(prediction_type="sample")), r"scheduler prediction_type='sample'"),
    ("v-prediction UNet", lambda f: _json_edit(f, "unet/config.json", lambda c: c.update(prediction_type="v_prediction")), r"unet prediction_type='v_prediction'"),
    ("trained_betas of length 2", lambda f: _json_edit(f, "scheduler/scheduler_config.json", lambda c: c.update(trained_betas=[0.1, 0.2])), r"trained_betas.*num_train_timesteps=1000"),
    ("NaN in trained_betas", lambda f: _json_edit(f, "scheduler/scheduler_config.json", lambda c: c.update(trained_betas=[1e-3] * 999 + [float("nan")])), r"trained_betas.*entry 999 is nan"),
    ("NaN beta_start", lambda f: _json_edit(f, "scheduler/scheduler_config.json", lambda c: c.update(beta_start=float("nan"))), r"`beta_start` must be a finite number"),
    ("unknown timestep_spacing", lambda f: _json_edit(f, "scheduler/scheduler_config.json", lambda c: c.update(timestep_spacing="random")), r"timestep_spacing='random'"),
    ("encoder norm_num_groups 0", lambda f: _json_edit(f, "encoder/config.json", lambda c: c.update(norm_num_groups=0)), r"encoder/config.json: `norm_num_groups` must be an int"),
    ("UNet norm_num_groups 0", lambda f: _json_edit(f, "unet/config.json", lambda c: c.update(norm_num_groups=0)), r"unet/config.json: `norm_num_groups`"),
    ("learned-variance UNet", lambda f: _json_edit(f, "unet/config.json", lambda c: c.update(out_channels=6)), r"out_channels=6 differs"),
    ("image processor of another size", lambda f: _json_edit(f, "image_processor/preprocessor_config.json", lambda c: c.update(resolution=32)), r"image_processor resolution=32 but encoder sample_size=16"),
    ("encoder of another size", lambda f: _json_edit(f, "encoder/config.json", lambda c: c.update(sample_size=32)), r"encoder sample_size=32 but unet sample_size=16"),
    ("NaN in latent_std", lambda f: _json_edit(f, "encoder/config.json", lambda c: c.update(latent_std=[1.0] * 15 + [float("nan")])), r"latent_std.*entry 15 is nan"),
    ("a block width of a billion", lambda f: _json_edit(f, "decoder/config.json", lambda c: c.update(block_out_channels=[10**9, 64, 64])), r"decoder/config.json: `block_out_channels`"),
    ("NaN encoder weight", lambda f: _weights_edit(f, "encoder", "proj_out.weight"), r"DiTiEncoderModel.*'proj_out.weight' has 2 NaN"),
    ("NaN decoder weight", lambda f: _weights_edit(f, "decoder", "label_emb.weight"), r"DiTiDecoderModel.*'label_emb.weight' has 2 NaN"),
    ("NaN UNet weight", lambda f: _weights_edit(f, "unet", "conv_in.weight"), r"UNet.*'conv_in.weight' has 2 NaN"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "edit", "match"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_a_hostile_pipeline_folder_is_refused_by_name(saved, tmp_path, case, edit, match):
    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    if "image processor" in case:
        from diti_hf.pipelines.image_processing_diti import DiTiImageProcessor

        pipe = DiTiPipeline.from_pretrained(folder)
        pipe.register_modules(image_processor=DiTiImageProcessor(resolution=16))
        pipe.save_pretrained(folder)
    edit(folder)
    with pytest.raises((ValueError, TypeError), match=match):
        DiTiPipeline.from_pretrained(folder)


# -------------------------------------------------------------------------------------------- API entry points
@pytest.fixture(scope="module")
def api_pipe():
    return tiny_pipeline()


Z = torch.zeros(1, 16)


def _nan(shape: tuple, value: float = float("nan")) -> torch.Tensor:
    tensor = torch.zeros(shape)
    tensor.view(-1)[0] = value
    return tensor


ENTRY_CASES = [
    ("NaN z", lambda p: p(z=_nan((1, 16)), num_inference_steps=2), ValueError, r"`z` contains 1 NaN"),
    ("inf z", lambda p: p(z=_nan((1, 16), float("inf")), num_inference_steps=2), ValueError, r"`z` contains 1 NaN or infinite"),
    ("NaN latents", lambda p: p(z=Z, latents=_nan((1, 3, 16, 16)), num_inference_steps=2), ValueError, r"`latents` contains 1"),
    ("NaN z_std", lambda p: p.edit(tiny_images(1), direction=torch.ones(16), z_std=_nan((16,)), num_inference_steps=2), ValueError, r"`z_std` contains 1"),
    ("NaN edit scale", lambda p: p.edit(tiny_images(1), direction=torch.ones(16), scales=[float("nan")], num_inference_steps=2), ValueError, r"`scales` must be finite"),
    ("grid pushed past T by steps_offset", lambda p: _with_scheduler(p, steps_offset=1)(z=Z, num_inference_steps=1000), ValueError, r"not 1000 distinct time-steps in \[0, 1000\)"),
]  # fmt: skip


def _with_scheduler(pipe, **config):
    from diffusers import DDIMScheduler

    return DiTiPipeline(
        pipe.unet, pipe.encoder, pipe.decoder, DDIMScheduler.from_config(pipe.scheduler.config, **config)
    )


@pytest.mark.parametrize(("case", "call", "error", "match"), ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_non_finite_inputs_are_refused_at_the_entry_points(api_pipe, case, call, error, match):
    with pytest.raises(error, match=match):
        call(api_pipe)


def _construct(pipe, **changes):
    parts = {"unet": pipe.unet, "encoder": pipe.encoder, "decoder": pipe.decoder, "scheduler": pipe.scheduler}
    return lambda: DiTiPipeline(**{**parts, **changes})


def test_components_the_sampler_does_not_implement_are_refused(api_pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler

    from diti_hf import DiTiEncoderModel

    config = api_pipe.scheduler.config
    cases = [
        (_construct(api_pipe, scheduler=PNDMScheduler.from_config(config)), TypeError, "PNDMScheduler"),
        (_construct(api_pipe, encoder=AutoencoderKL(block_out_channels=(32,), norm_num_groups=8)), TypeError, "AutoencoderKL"),
        (_construct(api_pipe, scheduler=DDIMScheduler.from_config(config, prediction_type="sample")), ValueError, "prediction_type='sample'"),
        (_construct(api_pipe, scheduler=DDIMScheduler.from_config(config, trained_betas=[float("nan")] * 1000)), ValueError, "trained_betas"),
        (_construct(api_pipe, scheduler=DDIMScheduler.from_config(config, beta_end=1.5)), ValueError, r"betas.*\(0, 1\)"),
        (lambda: DiTiEncoderModel(sample_size=16, block_out_channels=(32, 32), latent_dim=16, num_chunks=4, latent_std=[float("inf")] * 16), ValueError, "latent_std"),
        (lambda: DiTiEncoderModel(sample_size=16, block_out_channels=(32, 32), norm_num_groups=0), ValueError, "norm_num_groups"),
    ]  # fmt: skip
    for build, error, match in cases:
        with pytest.raises(error, match=match):
            build()


def test_every_sampling_grid_has_the_length_and_range_asked_for(api_pipe):
    T = 1000
    for spacing in ("leading", "trailing", "linspace"):
        pipe = _with_scheduler(api_pipe, timestep_spacing=spacing)
        for n in range(1, T + 1):
            grid = pipe._grid(n)
            assert len(grid) == n and grid == sorted(set(grid)), (spacing, n)
            assert grid[0] >= 0 and grid[-1] <= T - 1, (spacing, n)
            assert T - grid[-1] <= -(-T // n) and grid[0] < -(-T // n), (spacing, n)  # covers [0, T) to one step
            if T % n == 0 and spacing == "leading":  # the official grid, unchanged
                assert grid == list(range(0, T, T // n))


def test_generation_at_600_steps_reaches_the_last_chunk(api_pipe, monkeypatch):
    """At 600 steps diffusers' leading grid stopped at t = 599: the last chunks of z never reached the decoder."""
    from types import SimpleNamespace

    import diti_hf.pipelines.pipeline_diti as module

    seen = []

    def recording(unet, decoder, sample, t, condition, coefficients=None):  # what the decoder gets; a cheap ε
        seen.append((int(t), condition.clone()))
        return SimpleNamespace(eps=torch.zeros_like(sample), shift=None)

    monkeypatch.setattr(module, "denoise", recording)
    z = torch.ones(1, 16)
    api_pipe(z=z, num_inference_steps=600, output_type="pt")
    first_t, first_condition = seen[0]
    assert len(seen) == 600 and first_t == 998 and api_pipe.partition.chunk_of(first_t) == 3  # the last of 4
    assert torch.equal(first_condition, z)  # every dim of z, the last chunk's included, conditions the first step


# --------------------------------------------------------------------------------------------------- converter
def _official_unet_weights() -> dict:
    return torch.load(FIXTURE_DIR / "pretrained_dpm_checkpoint.pt", weights_only=True)["ema_denoise_fn"]


def _weights_with(key: str, value: torch.Tensor) -> dict:
    return {"ema_denoise_fn": {**_official_unet_weights(), key: value}}


QKV = "input_blocks.3.1.qkv.weight"
CONVERTER_CASES = [
    ("NaN weight", lambda: _weights_with(QKV, _nan((192, 64, 1))), r"'input_blocks.3.1.qkv.weight' has 1 NaN"),
    ("int64 weight", lambda: _weights_with(QKV, torch.zeros(192, 64, 1, dtype=torch.int64)), r"qkv.weight' is torch.int64"),
    ("complex weight", lambda: _weights_with(QKV, torch.zeros(192, 64, 1, dtype=torch.complex64)), r"qkv.weight' is torch.complex64"),
    ("zero-stride weight", lambda: _weights_with(QKV, torch.zeros(1).expand(192, 64, 1)), r"qkv.weight' .*\(zero or overlapping strides\)"),
    ("a weight that is no tensor", lambda: _weights_with(QKV, [1.0]), r"not a state dict of tensors"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "checkpoint", "match"), CONVERTER_CASES, ids=[c[0] for c in CONVERTER_CASES])
def test_the_converter_refuses_bad_weights_by_name(case, checkpoint, match):
    from diti_hf.conversion import convert_official

    with pytest.raises(ValueError, match=match):
        convert_official(FIXTURE_DIR / "dpm_config.yml", checkpoint(), image_size=64)


def test_yaml_nested_too_deeply_or_too_large_is_refused(tmp_path):
    from diti_hf.conversion import load_official_yaml

    deep = tmp_path / "deep.yml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000)
    large = tmp_path / "large.yml"
    large.write_text("a: 1\n" + "#" * (17 * 2**20))
    for path, match in ((deep, "deep.yml"), (large, "large.yml: .* more than a YAML config may have")):
        with pytest.raises(ValueError, match=match):
            load_official_yaml(path)


# ----------------------------------------------------------------------------------- tiny inputs, huge costs
_CAPPED_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    import diti_hf
    from diti_hf import DiTiPipeline
    from diti_hf.conversion import convert_official

    def vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    limit = vm_size() + 2**30  # the imports are not what is measured: 1 GiB above them
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def load_and_use(folder):
        pipe = DiTiPipeline.from_pretrained(folder)
        import PIL.Image
        pipe.encode(PIL.Image.new("RGB", (16, 16)))
        pipe(z=torch.zeros(1, 16), num_inference_steps=1, output_type="pt")

    for case, kind, args in json.loads(sys.argv[1]):
        start = time.perf_counter()
        try:
            (load_and_use if kind == "pipeline" else convert_official)(*args)
            result = {"error": None, "message": "", "length": 0}
        except BaseException as error:
            message = " ".join(str(error).split())
            result = {"error": type(error).__name__, "message": message[:600], "length": len(message)}
        result.update(case=case, seconds=time.perf_counter() - start)
        print(json.dumps(result), flush=True)
    """
)


def _bomb_yaml(path: Path) -> None:
    config = (FIXTURE_DIR / "dpm_config.yml").read_text()
    levels = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 9^9 ints when expanded
    path.write_text("\n".join(levels) + "\n" + config.replace("num_heads: 2", "num_heads: *a8"))
    assert path.stat().st_size < 2048


# (id, kind, prepare(tmp folder) -> call arguments, regex of the ValueError)
CAPPED_CASES = [
    ("YAML alias bomb in num_heads", "convert", lambda d: (_bomb_yaml(d / "bomb.yml"), [str(d / "bomb.yml"), str(FIXTURE_DIR / "pretrained_dpm_checkpoint.pt"), None, None, True, 64])[1], r"num_heads` must be a positive integer, got \[\[\["),
    ("YAML sizes of a huge UNet", "convert", lambda d: _yaml_with(d, "base_channel: 32", "base_channel: 2048"), r"does not match the converted model"),
    ("300 million timesteps", "convert", lambda d: _yaml_with(d, "timesteps: 1000", "timesteps: 300000000"), r"diffusion_config.timesteps` must be at most 100000"),
    ("zero-stride qkv of 3.8 GB", "convert", lambda d: _stride_zero_checkpoint(d), r"zero or overlapping strides"),
    ("image processor resolution 10000", "pipeline", lambda d: _pipeline_with(d, "image_processor/preprocessor_config.json", resolution=10000), r"resolution"),
    ("UNet sample_size 1024", "pipeline", lambda d: _pipeline_with(d, "unet/config.json", sample_size=1024), r"unet sample_size=1024"),
    ("scheduler with 300 million timesteps", "pipeline", lambda d: _pipeline_with(d, "scheduler/scheduler_config.json", num_train_timesteps=300_000_000), r"num_train_timesteps` must be an int in \[1, 100000\]"),
    ("sparse 2 GB model_index.json", "pipeline", lambda d: _sparse_index(d), r"model_index.json: 2147483648 bytes"),
]  # fmt: skip


def _yaml_with(folder: Path, old: str, new: str) -> list:
    path = folder / "dpm.yml"
    path.write_text((FIXTURE_DIR / "dpm_config.yml").read_text().replace(old, new))
    return [str(path), str(FIXTURE_DIR / "pretrained_dpm_checkpoint.pt"), None, None, True, 64]


def _stride_zero_checkpoint(folder: Path) -> list:
    path = folder / "stride0.pt"
    torch.save(_weights_with(QKV, torch.zeros(1).expand(30_000, 32_000, 1)), path)  # 3.8 GB if copied
    return [str(FIXTURE_DIR / "dpm_config.yml"), str(path), None, None, True, 64]


def _pipeline_with(folder: Path, name: str, **changes) -> list:
    from diti_hf.pipelines.image_processing_diti import DiTiImageProcessor

    pipe = tiny_pipeline()
    pipe.register_modules(image_processor=DiTiImageProcessor(resolution=16))
    pipe.save_pretrained(folder / "pipe")
    _json_edit(folder / "pipe", name, lambda c: c.update(changes))
    return [str(folder / "pipe")]


def _sparse_index(folder: Path) -> list:
    args = _pipeline_with(folder, "model_index.json")
    with open(folder / "pipe" / "model_index.json", "r+b") as f:
        f.truncate(2 * 2**30)
    return args


@pytest.fixture(scope="module")
def capped_results(tmp_path_factory) -> dict[str, dict]:
    """Every case of `CAPPED_CASES`, run in one subprocess whose address space is capped."""
    jobs = []
    for i, (case, kind, prepare, _) in enumerate(CAPPED_CASES):
        folder = tmp_path_factory.mktemp(f"capped{i}")
        jobs.append([case, kind, prepare(folder)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", _CAPPED_CHILD, json.dumps(jobs)], env=env, capture_output=True, text=True, timeout=300
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["case"]] = result
    assert results, proc.stderr[-3000:]
    return results


@pytest.mark.parametrize(("case", "kind", "prepare", "match"), CAPPED_CASES, ids=[c[0] for c in CAPPED_CASES])
def test_tiny_inputs_cannot_exhaust_memory(capped_results, case, kind, prepare, match):
    import re

    result = capped_results[case]
    assert result["error"] == "ValueError" and re.search(match, result["message"]), result
    assert result["length"] < 5000 and result["seconds"] < 10, result  # a bounded message, in seconds
