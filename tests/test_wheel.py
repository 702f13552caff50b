"""A non-editable install from the wheel works outside the checkout.

The wheel is built offline (`pip wheel --no-deps --no-build-isolation --no-index`) from a copy of the files the build
reads, so that setuptools' `build/` and `*.egg-info` never land in the shared working tree. It is installed with
`--no-deps` into a fresh virtual environment whose only link to the test environment is a `.pth` line naming the
test environment's site-packages: torch & co. come from there, but that directory is appended to `sys.path` after the
fresh site-packages and the `.pth` files inside it (the editable install's `__editable__.diti_hf-*.pth`, which adds
`src/` of the checkout) are not processed, so `import diti_hf` must resolve to the wheel. Every command runs from a
temporary directory outside the checkout, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DITI_SLOW") != "1", reason="builds a wheel and installs it in a fresh venv; DITI_SLOW=1"
    ),
]

REPO = Path(__file__).resolve().parent.parent
# the version the wheel gets (read here without importing diti_hf, i.e. torch & co.)
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.M).group(1)
PACKAGE = REPO / "src" / "diti_hf"
SHIPPED_MODEL = REPO / "pretrained" / "diti-shapes32"
BUILD_INPUTS = ("pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "LICENSE.txt", "LICENSE.md")
NOT_PACKAGE_FILES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npy", ".npz")
TIMEOUT = 300


def _env(root: Path) -> dict[str, str]:
    """This environment without PYTHONPATH (it could name the checkout), offline, one thread, a throw-away HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONNOUSERSITE="1",
        OMP_NUM_THREADS="1",
        HOME=str(root / "home"),  # no cache or config of the user's is read or written
    )
    return env


def _run(args: Sequence[str | os.PathLike], cwd: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(root), capture_output=True, text=True, timeout=TIMEOUT
    )


def _check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class FreshEnv:
    """The fresh venv with the wheel installed, and a working directory outside the checkout."""

    root: Path
    wheel: Path
    venv: Path
    site_packages: Path
    workdir: Path
    package_copy: Path  # the package tree the wheel was built from

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def console_script(self) -> Path:
        return self.venv / "bin" / "diti-hf"

    def run(self, *args: str | os.PathLike, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return _run(args, cwd or self.workdir, self.root)


def _build_backend_available() -> None:
    """The build runs without isolation, so the backend must already be in this environment (nothing downloaded)."""
    try:
        import setuptools
    except ImportError:
        pytest.fail("setuptools is not installed in the test environment: the offline wheel build needs it")
    major, minor = (int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    if (major, minor) < (70, 1):  # older setuptools takes bdist_wheel from the `wheel` package
        try:
            import wheel  # noqa: F401
        except ImportError:
            pytest.fail(f"setuptools {setuptools.__version__} needs the `wheel` package to build a wheel offline")


@pytest.fixture(scope="module")
def fresh() -> Iterator[FreshEnv]:
    _build_backend_available()
    root = Path(tempfile.mkdtemp(prefix="diti_hf-wheel-"))
    try:
        (root / "home").mkdir()
        source = root / "source"
        shutil.copytree(PACKAGE, source / "src" / "diti_hf", ignore=NOT_PACKAGE_FILES)
        for name in BUILD_INPUTS:
            if (REPO / name).is_file():
                shutil.copy2(REPO / name, source / name)
        dist = root / "dist"
        pip_wheel = ["pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source]
        _check(_run([sys.executable, "-m", *pip_wheel], root, root), "pip wheel")
        wheels = sorted(dist.glob("diti_hf-*.whl"))
        assert len(wheels) == 1, wheels

        venv = root / "venv"
        _check(_run([sys.executable, "-m", "venv", "--without-pip", venv], root, root), "python -m venv")
        python = venv / "bin" / "python"
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site_packages = Path(_check(_run([python, "-c", purelib], root, root), "the fresh python").stdout.strip())
        assert site_packages.is_relative_to(venv), site_packages
        # the wheel alone, no dependency resolution: nothing else is installed in the fresh venv
        pip_install = ["pip", "--python", python, "install", "--no-deps", "--no-index", "--no-compile", wheels[0]]
        _check(_run([sys.executable, "-m", *pip_install], root, root), "pip install")
        # the dependencies (torch, diffusers, ...) from this environment, after the fresh site-packages
        paths = sysconfig.get_paths()
        dev_dirs = dict.fromkeys(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib"))
        (site_packages / "_diti_hf_test_dependencies.pth").write_text("".join(f"{d}\n" for d in dev_dirs))
        workdir = root / "work"
        workdir.mkdir()
        yield FreshEnv(root, wheels[0], venv, site_packages, workdir, source / "src" / "diti_hf")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ wheel
def test_wheel_holds_the_package_and_its_data_but_no_tests_or_weights(fresh):
    with zipfile.ZipFile(fresh.wheel) as wheel:
        names = wheel.namelist()
        dist_info = f"diti_hf-{VERSION}.dist-info"
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert {n.split("/")[0] for n in names} == {"diti_hf", dist_info}, sorted({n.split("/")[0] for n in names})
    # every file of the package tree ships: its modules and what it reads at run time (the model card template)
    package_files = {
        f"diti_hf/{p.relative_to(fresh.package_copy).as_posix()}" for p in fresh.package_copy.rglob("*") if p.is_file()
    }
    assert "diti_hf/model_card_template.md" in package_files
    assert sorted(package_files - set(names)) == []
    assert [n for n in names if n.endswith(WEIGHT_SUFFIXES) or "__pycache__" in n or n.endswith(".pyc")] == []
    assert not any(re.search(r"(^|/)(tests|pretrained|fixtures)/", n) for n in names)
    assert fresh.wheel.stat().st_size < 2 * 2**20
    assert re.search(r"^diti-hf\s*=\s*diti_hf\.cli:main$", entry_points, flags=re.M), entry_points
    assert re.search(r"^Name: diti_hf$", metadata, flags=re.M)
    assert re.search(r"^Requires-Dist: torch", metadata, flags=re.M)


PROVENANCE = r"""
import importlib.metadata, importlib.util, json, sys
from pathlib import Path
spec = importlib.util.find_spec("diti_hf")  # where `import diti_hf` would load it from (the README test imports it)
dist = importlib.metadata.distribution("diti_hf")
print(json.dumps({
    "origin": str(Path(spec.origin).resolve()),
    "dist_version": dist.version,
    "dist_location": str(Path(dist.locate_file("diti_hf")).resolve()),
    "sys_path": sys.path,
}))
"""


def test_import_resolves_to_the_wheel_not_the_checkout(fresh):
    out = json.loads(_check(fresh.run(fresh.python, "-c", PROVENANCE), "provenance probe").stdout)
    installed = fresh.site_packages.resolve() / "diti_hf"
    assert Path(out["origin"]) == installed / "__init__.py", out["origin"]
    assert not Path(out["origin"]).is_relative_to(REPO), out["origin"]
    assert Path(out["dist_location"]) == installed
    assert out["dist_version"] == VERSION
    assert not any(Path(p).resolve() == (REPO / "src").resolve() for p in out["sys_path"] if p), out["sys_path"]
    assert fresh.console_script.read_text().splitlines()[0] == f"#!{fresh.python}"


# -------------------------------------------------------------------------------------------------------- CLI
def test_console_script_help(fresh):
    main = _check(fresh.run(fresh.console_script, "--help"), "diti-hf --help").stdout
    assert main.startswith("usage: diti-hf")
    for command in ("demo", "encode", "reconstruct", "swap", "interpolate", "edit", "convert"):
        assert re.search(rf"\b{command}\b", main), command
    demo = _check(fresh.run(fresh.console_script, "demo", "--help"), "diti-hf demo --help").stdout
    assert demo.startswith("usage: diti-hf demo")
    assert "--model" in demo and "--output-dir" in demo


def test_demo_outside_a_checkout_finds_the_models_or_names_the_flag(fresh, tmp_path):
    """Outside a checkout `pretrained/` is not at hand: the demo must run on models it finds, or stop with one line
    (no traceback) that names the flag to pass."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = fresh.run(fresh.console_script, "demo", "--no-progress", cwd=workdir)
    if result.returncode == 0:
        assert (workdir / "outputs" / "demo" / "report.md").is_file(), result.stdout
        return
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--model" in lines[0], lines[0]
    assert result.stdout.strip() == "", result.stdout


# ----------------------------------------------------------------------------------------------------- README
README_EPILOGUE = r"""
import json, math
import numpy as np
import diti_hf
from importlib import resources
from diti_hf.hub import TEMPLATE_NAME, _template
size = pipe.encoder.config.sample_size
def pil_ok(images):  # RGB of the model's size, not one flat colour (what NaN outputs turn into)
    return all(im.mode == "RGB" and im.size == (size, size) and np.asarray(im).std() > 0 for im in images)
print(json.dumps({
    "diti_hf_file": diti_hf.__file__,
    "version": diti_hf.__version__,
    "template_path": str(resources.files("diti_hf").joinpath(TEMPLATE_NAME)),
    "template": _template(),
    "size": size,
    "latent_dim": pipe.encoder.config.latent_dim,
    "z": list(z.shape), "z_finite": bool(z.isfinite().all()), "z_std": float(z.std()),
    "coarse": list(coarse.shape), "fine": list(fine.shape),
    "chunk0_dims": list(pipe.partition.chunk_dims(0)),
    "recon": len(recon), "recon_ok": pil_ok(recon),
    "x_T": list(x_T.shape), "x_T_finite": bool(x_T.isfinite().all()),
    "again": len(again), "again_ok": pil_ok(again),
    "grid": len(grid), "grid_ok": pil_ok(grid),
    "row": len(row), "row_ok": pil_ok(row),
    "edited": len(edited), "edited_ok": pil_ok(edited),
    "features": list(features.shape), "features_vs_z": float((features - z).abs().max()),
}), file=open("readme_result.json", "w"))
"""


def _readme_code(model: Path) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Using a pretrained DiTi")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], flags=re.S)
    assert len(blocks) >= 6, "the README's Python example changed shape"
    code = "\n".join(blocks)
    assert '"org/diti-celeba64"' in code
    return code.replace('"org/diti-celeba64"', repr(str(model)))


def test_readme_example_on_the_shipped_model(fresh, tmp_path):
    if not (SHIPPED_MODEL / "model_index.json").is_file():
        pytest.skip("no shipped model in pretrained/diti-shapes32")
    workdir = tmp_path / "readme"
    workdir.mkdir()
    (workdir / "readme_example.py").write_text(_readme_code(SHIPPED_MODEL) + README_EPILOGUE, encoding="utf-8")
    _check(fresh.run(fresh.python, "readme_example.py", cwd=workdir), "the README example")
    out = json.loads((workdir / "readme_result.json").read_text())
    installed = fresh.site_packages.resolve() / "diti_hf"
    assert Path(out["diti_hf_file"]).resolve() == installed / "__init__.py", out["diti_hf_file"]
    assert out["version"] == VERSION
    # the package data read at run time (`diti_hf.hub`'s model card template) comes from the wheel
    assert Path(out["template_path"]).resolve() == installed / "model_card_template.md"
    assert out["template"] == (PACKAGE / "model_card_template.md").read_text(encoding="utf-8")
    size, d = out["size"], out["latent_dim"]
    assert out["z"] == [4, d] and out["z_finite"] and out["z_std"] > 0
    assert out["coarse"][0] == 4 and 0 < out["coarse"][1] < d
    start, stop = out["chunk0_dims"]
    assert out["fine"] == [4, stop - start] and 0 < stop - start < d
    assert out["recon"] == 4 and out["recon_ok"]
    assert out["x_T"] == [4, 3, size, size] and out["x_T_finite"]
    assert out["again"] == 4 and out["again_ok"]
    assert out["grid"] == 4 and out["grid_ok"]  # 2 sources × 2 ranges
    assert out["row"] == 5 and out["row_ok"]
    assert out["edited"] == 3 and out["edited_ok"]
    assert out["features"] == [4, d] and out["features_vs_z"] == 0
