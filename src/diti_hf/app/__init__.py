"""The DiTi browser app: reconstruct, swap, interpolate and edit two images with a [`DiTiPipeline`], in Gradio.

`diti-hf app --model FOLDER_OR_HUB_ID` serves it (default: the shipped `pretrained/diti-shapes32`), and
`spaces/diti-shapes32/` is the same app as a Hugging Face Space. Gradio is the optional extra `diti_hf[app]`; the
helpers that read uploads and describe the partition need only the core dependencies.

Every model call goes through the pipeline's public methods (`swap`, `interpolate`, `edit`, `reconstruct`), so the
pictures on the page are what those methods return for the same inputs. The page works without internet: analytics,
the version check and share links are off, the theme's fonts are served by the app itself, and the model is loaded
before the server starts. Bad input (a file that is not an image, an animated, 16-bit or oversized image, a direction
of the wrong length or a `.npy` whose header claims more values than z has, a time-step range outside [0, T), a
seed, step count, top-k or scale outside its range) is answered in the page's status line naming the field (its label
on the page), with what was wrong and what was expected, never with a traceback. Uploads and the images the page shows
are temporary files: they are deleted [`UPLOAD_MAX_AGE_S`] after they were written, and all of them when the server
stops.

The package's modules: `inputs` (the field labels and the checks of what is typed or uploaded), `actions` ([`DiTiApp`],
the model side), `figures` (the header, the partition figure and the range descriptions) and `page` (the Gradio page,
one function per part, and [`launch_app`]); every public name is importable from `diti_hf.app`.
"""

from __future__ import annotations

from .actions import DEFAULT_PROBE_DATASET, DEFAULT_PROBE_IMAGES, MAX_CACHED_PROBES, DiTiApp
from .figures import (
    AIM,
    ALIGNMENT_IMAGE_NAMES,
    DEFAULT_REPORT,
    SHIPPED_FINDINGS,
    UNMEASURED,
    describe_range,
    find_alignment_image,
    page_header,
    partition_figure,
    partition_summary,
    preset_ranges,
)
from .inputs import (
    FIELDS,
    MAX_ABS_SCALE,
    MAX_IMAGE_PIXELS,
    MAX_SCALES,
    MAX_SEED,
    MAX_STEPS,
    MAX_STRIP,
    MAX_UPLOAD_BYTES,
    AppInputError,
    check_range,
    check_scales,
    check_seed,
    check_steps,
    check_top_k,
    check_whole,
    interpolation_alphas,
    parse_scales,
    read_direction,
    read_image,
)
from .page import (
    CSS,
    DEFAULT_STEPS,
    OFFLINE_ENVIRONMENT,
    UPLOAD_MAX_AGE_S,
    UPLOAD_SWEEP_EVERY_S,
    build_app,
    launch_app,
)

__all__ = [
    "AIM",
    "ALIGNMENT_IMAGE_NAMES",
    "CSS",
    "DEFAULT_PROBE_DATASET",
    "DEFAULT_PROBE_IMAGES",
    "DEFAULT_REPORT",
    "DEFAULT_STEPS",
    "FIELDS",
    "MAX_ABS_SCALE",
    "MAX_CACHED_PROBES",
    "MAX_IMAGE_PIXELS",
    "MAX_SCALES",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_STRIP",
    "MAX_UPLOAD_BYTES",
    "OFFLINE_ENVIRONMENT",
    "SHIPPED_FINDINGS",
    "UNMEASURED",
    "UPLOAD_MAX_AGE_S",
    "UPLOAD_SWEEP_EVERY_S",
    "AppInputError",
    "DiTiApp",
    "build_app",
    "check_range",
    "check_scales",
    "check_seed",
    "check_steps",
    "check_top_k",
    "check_whole",
    "describe_range",
    "find_alignment_image",
    "interpolation_alphas",
    "launch_app",
    "page_header",
    "parse_scales",
    "partition_figure",
    "partition_summary",
    "preset_ranges",
    "read_direction",
    "read_image",
]
