"""Runs the README's "Using a pretrained DiTi" snippets on a tiny saved pipeline."""

import re
from pathlib import Path

from conftest import tiny_pipeline

README = Path(__file__).parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_using_a_pretrained_diti_snippets_run(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    blocks = re.findall(r"```python\n(.*?)```", _section("Using a pretrained DiTi"), flags=re.S)
    assert len(blocks) >= 6
    code = "\n".join(blocks).replace('"org/diti-celeba64"', repr(str(tmp_path / "pipe")))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["z"].shape == (4, 16)
    assert namespace["coarse"].shape == (4, 8)
    assert len(namespace["recon"]) == 4 and namespace["recon"][0].size == (16, 16)
    assert len(namespace["grid"]) == 4 and len(namespace["row"]) == 5 and len(namespace["edited"]) == 3
    assert namespace["features"].shape == (4, 16)
    assert (namespace["features"] - namespace["z"]).abs().max() == 0
