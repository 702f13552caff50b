"""The `diti-hf demo` job (`make demo`): what a DiTi model does, end to end, on CPU, without network.

It runs a trained pipeline — by default the shipped `pretrained/diti-shapes32/` with its PDAE baseline
`pretrained/pdae-shapes32/` side by side, both trained against the frozen DDPM `pretrained/ddpm-shapes32/` — and
writes reconstructions, late- and early-chunk swaps, an interpolation strip, a classifier-direction edit, the
time-step alignment heatmap and a report of the evaluation metrics. These are small demonstration models: their swaps
change the image, but not yet one attribute group at a time (README.md, "Results", has the measured numbers).

The interim mode (`--official-fixture DIR`, or the fallback where no trained model is found) runs the official
fixture checkpoint (random weights) instead: it checks parity with the official implementation and makes the same
pipeline calls, but its images mean nothing. The default paths are looked up in the working directory, then in the
source checkout this package runs from (a wheel install has neither `pretrained/` nor the fixture).
"""

from .config import (
    DEFAULT_BASELINE,
    DEFAULT_FIXTURE,
    DEFAULT_MODEL,
    FULL_REPORT_SECTIONS,
    INTERIM_NOTICE,
    ORACLE_SECTIONS,
    OUTPUT_FILES,
    DemoConfig,
    resolve_default,
    search_roots,
)
from .fixture import official_fixture_pipeline
from .run import run_demo

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_FIXTURE",
    "DEFAULT_MODEL",
    "FULL_REPORT_SECTIONS",
    "INTERIM_NOTICE",
    "ORACLE_SECTIONS",
    "OUTPUT_FILES",
    "DemoConfig",
    "official_fixture_pipeline",
    "resolve_default",
    "run_demo",
    "search_roots",
]
