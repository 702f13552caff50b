"""One evaluation run, as `diti-hf evaluate` and `examples/evaluate.py` make it: the dataset of the protocol, the named
models, the [`EvaluationConfig`] and the written report ([`run_benchmark`]); the front ends only parse their flags
([`benchmark_arguments`]) and name them in the errors."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .names import PROTOCOLS

if TYPE_CHECKING:
    from .config import EvaluationConfig

logger = logging.getLogger(__name__)

_PROBE_VALUES = {"probe_epochs": "epochs", "probe_lr": "lr", "probe_batch_size": "batch_size"}
_POSITIVE = ("max_alignment_groups",)  # EvaluationConfig allows None (every chunk); a given value must be >= 1


# Long for its docstring (one entry per argument); the body delegates to the helpers below.
def run_benchmark(
    models: Mapping[str, Any],
    output_dir: str | os.PathLike,
    *,
    config: EvaluationConfig | None = None,
    protocol: str = "shapes",
    dataset: str | None = None,
    shapes_dataset: str | None = None,
    shapes_factors: str | os.PathLike | Sequence[Any] | None = None,
    split: str = "train",
    num_images: int = 3000,
    data_seed: int | None = None,
    resolution: int | None = None,
    factors: Sequence[str] | None = None,
    dataset_config: str | None = None,
    columns: Mapping[str, str] | str | None = None,
    image_column: str | None = None,
    attributes_column: str | None = None,
    max_samples: int | None = None,
    sources: Mapping[str, str] | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    r"""
    Evaluates named models on a benchmark and writes `output_dir/report.json` (and the plots of the shapes protocol).

    Args:
        models (`dict[str, Any]`): Name → a pipeline folder or Hub id (loaded with [`load_model`]: a
            [`~diti_hf.DiTiPipeline`], or a diffusers `DDPMPipeline` for the frozen DDPM's diagnostics alone) or anything
            [`evaluate_pipeline`] takes. The names `"random_init"` and `"pixels"` are the baselines'.
        output_dir (`str` or `os.PathLike`): Folder of the report, created only once the report is ready, so that a
            failed run leaves no folder behind.
        config ([`EvaluationConfig`], *optional*): Sizes and switches (default: `EvaluationConfig()`); its `seed` seeds
            the data too unless `data_seed` is given. The celeba / lfw protocols use only its probe
            (`selection="joint"`).
        protocol (`str`, defaults to `"shapes"`): One of [`PROTOCOLS`].
        dataset (`str`, *optional*): With `"shapes"`: a built-in generated dataset (`data.shapes.SHAPES_DATASETS`), a
            saved dataset folder or a Hub id with factor `ClassLabel` columns (default: `shapes_dataset`). With
            `"celeba"` / `"lfw"` (required): the Hub id or folder holding the attributes.
        shapes_dataset (`str`, *optional*): The built-in generated dataset when `dataset` is not given (default
            `"diti-shapes"`).
        shapes_factors (`str`, `os.PathLike` or `list`, *optional*): A variant of the generated shapes: a JSON file
            with a list of `ShapeFactor` dicts, or the list itself (of dicts or `ShapeFactor`s).
        split (`str`, defaults to `"train"`): Split of a loaded (not generated) `"shapes"` dataset.
        num_images (`int`, defaults to 3000): Images generated (or the first ones kept of a loaded dataset); at least
            [`~EvaluationConfig.minimum_images`], checked before anything is loaded. The config's unset per-image
            sizes follow it (see [`~EvaluationConfig.sized_for`]).
        data_seed (`int`, *optional*): Seed of the generated images (default: `config.seed`).
        resolution (`int`, *optional*): Side of the generated images (default: the first model's sample size).
        factors (`list[str]`, *optional*): Factor columns evaluated (default: every `ClassLabel` column).
        dataset_config (`str`, *optional*): Configuration name of a celeba / lfw Hub dataset.
        columns (`dict[str, str]` or `str`, *optional*): celeba / lfw: attribute → column mapping (or its JSON text).
        image_column (`str`, *optional*): celeba / lfw: the image column, if not the schema's.
        attributes_column (`str`, *optional*): celeba / lfw: one sequence column holding every attribute.
        max_samples (`int`, *optional*): celeba / lfw: rows per split (quick runs).
        sources (`dict[str, str]`, *optional*): Where each model came from, recorded in `report["dataset"]["models"]`
            (default: the folder or id of each model given as one).
        device (`str`, defaults to `"cpu"`), progress (`bool`, defaults to `False`): Of the models loaded here.

    Returns:
        `dict`: The report (as written to `output_dir/report.json`).

    Raises:
        `ValueError`: A bad value; the message starts with its name in backticks, for the front ends to name the flag.

    Examples:
    ```py
    >>> from diti_hf.evaluation import run_benchmark
    >>> report = run_benchmark({"diti": "pretrained/diti-shapes32"}, "out/eval", num_images=2000)
    ```
    """
    from .config import EvaluationConfig
    from .suite import evaluate_pipeline

    config = config or EvaluationConfig()
    _check_data(protocol, dataset, shapes_dataset, shapes_factors, num_images, max_samples)
    if protocol == "shapes":
        config.check_num_images(num_images)
    columns = _columns(columns)
    output_dir = Path(output_dir)
    pipes = {name: _loaded(name, model, device, progress) for name, model in models.items()}
    _check_swap_ranges(pipes, config.swap_ranges)
    if protocol != "shapes":
        schema = _schema(protocol, columns, image_column, attributes_column)
        load = {"name": dataset_config} if dataset_config else {}
        report = _attribute_report(pipes, protocol, dataset, schema, config, max_samples, load)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    else:
        data_seed = config.seed if data_seed is None else data_seed
        resolution = resolution or _sample_size(next(iter(pipes.values())))
        data, info = _shapes_data(dataset, shapes_dataset, shapes_factors, split, num_images, data_seed, resolution)
        info["models"] = {name: _source(name, models[name], sources) for name in pipes}
        report = evaluate_pipeline(pipes, data, config, factors=factors, output_dir=output_dir, dataset_info=info)
    logger.info("report written to %s", output_dir / "report.json")
    return report


def benchmark_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    r"""
    The keyword arguments of [`run_benchmark`] (its `config` built) from flat values, as the front ends' flags hold them
    (pass `vars(args)`): [`run_benchmark`]'s parameters and [`EvaluationConfig`]'s fields by name, `probe_epochs` /
    `probe_lr` / `probe_batch_size` for the probe's, `batch_size` for both the swap and the encoding batch size;
    `no_<switch>=True` turns a switch off (`no_plots`, `no_progress`, …). A missing or `None` value keeps the default;
    other keys are ignored. Everything that does not need the models is checked here, before anything is loaded,
    `num_images` against the config's [`~EvaluationConfig.minimum_images`] included.

    Args:
        values (`dict[str, Any]`): The values.

    Returns:
        `dict`: Keyword arguments of [`run_benchmark`], with `config` an [`EvaluationConfig`].

    Raises:
        `ValueError`: A bad value; the message starts with its name in backticks.
    """
    values = dict(values)
    for name in [n for n in values if n.startswith("no_")]:
        if values[name]:
            values[name[3:]] = False
    parameters = inspect.signature(run_benchmark).parameters
    kwargs = {
        name: values[name]
        for name, parameter in parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name != "config" and values.get(name) is not None
    }
    kwargs["config"] = _config(values)
    _check_data(
        kwargs.get("protocol", "shapes"),
        kwargs.get("dataset"),
        kwargs.get("shapes_dataset"),
        kwargs.get("shapes_factors"),
        kwargs.get("num_images", 1),
        kwargs.get("max_samples"),
    )
    if kwargs.get("protocol", "shapes") == "shapes" and "num_images" in kwargs:
        kwargs["config"].check_num_images(kwargs["num_images"])
    if "columns" in kwargs:
        kwargs["columns"] = _columns(kwargs["columns"])
    return kwargs


def _config(values: Mapping[str, Any]) -> EvaluationConfig:
    """The [`EvaluationConfig`] of flat values (see [`benchmark_arguments`])."""
    from .config import EvaluationConfig
    from .probes import ProbeConfig

    for name in _POSITIVE:
        value = values.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    fields = {f.name for f in dataclasses.fields(EvaluationConfig)} - {"probe"}
    kwargs = {name: values[name] for name in fields if values.get(name) is not None}
    if values.get("batch_size") is not None:
        kwargs.setdefault("swap_batch_size", values["batch_size"])
        kwargs.setdefault("encode_batch_size", values["batch_size"])
    probe = {field: values[name] for name, field in _PROBE_VALUES.items() if values.get(name) is not None}
    try:
        kwargs["probe"] = ProbeConfig(**probe, seed=kwargs.get("seed", 0))
    except ValueError as error:  # ProbeConfig names its own fields: `epochs` → `probe_epochs`
        raise ValueError(str(error).replace("`", "`probe_", 1)) from None
    return EvaluationConfig(**kwargs)


def _check_data(
    protocol: str,
    dataset: str | None,
    shapes_dataset: str | None,
    shapes_factors: Any,
    num_images: int,
    max_samples: int | None,
) -> None:
    from ..data.shapes import SHAPES_DATASETS

    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}.")
    if protocol != "shapes":
        if not dataset:
            raise ValueError(f"`protocol` {protocol} needs `dataset` (a Hub id or a local folder).")
        for name, value in (("shapes_dataset", shapes_dataset), ("shapes_factors", shapes_factors)):
            if value is not None:
                raise ValueError(f"`{name}` is for the shapes protocol, not {protocol}.")
    if shapes_dataset is not None and shapes_dataset not in SHAPES_DATASETS:
        raise ValueError(f"`shapes_dataset` must be one of {sorted(SHAPES_DATASETS)}, got {shapes_dataset!r}.")
    if protocol == "shapes" and dataset is not None and shapes_dataset is not None:
        raise ValueError(f"`shapes_dataset` and `dataset`: give one, got {shapes_dataset!r} and {dataset!r}.")
    if protocol == "shapes" and shapes_factors is not None and dataset is not None and dataset not in SHAPES_DATASETS:
        raise ValueError(f"`shapes_factors` varies the generated shapes; `dataset` {dataset!r} is loaded.")
    for name, value in (("num_images", num_images), ("max_samples", max_samples)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def _columns(columns: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if isinstance(columns, str):
        try:
            columns = json.loads(columns)
        except json.JSONDecodeError as error:
            raise ValueError(f"`columns` must be a JSON object: {error}") from None
    if columns is not None and not isinstance(columns, Mapping):
        raise ValueError(f"`columns` must be a JSON object mapping attribute names to column names, got {columns!r}.")
    return None if columns is None else dict(columns)


# ------------------------------------------------------------------------------------------------------ models
def is_ddpm_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a saved diffusers `DDPMPipeline` (a bare frozen DDPM) rather than a DiTi pipeline."""
    index = Path(path) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "DDPMPipeline"


def load_model(source: str | os.PathLike, device: str = "cpu", progress: bool = False) -> Any:
    r"""
    The pipeline of a folder or Hub id, on `device`: a diffusers `DDPMPipeline` where the folder holds one (the frozen
    DDPM's diagnostics only), else a [`~diti_hf.DiTiPipeline`].

    Args:
        source (`str` or `os.PathLike`): A pipeline folder or a Hub repo id.
        device (`str`, defaults to `"cpu"`): Torch device.
        progress (`bool`, defaults to `False`): Show the pipeline's progress bars.
    """
    from diffusers import DDPMPipeline

    from ..pipelines import DiTiPipeline

    cls = DDPMPipeline if is_ddpm_folder(source) else DiTiPipeline
    pipe = cls.from_pretrained(str(source)).to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


def _loaded(name: str, model: Any, device: str, progress: bool) -> Any:
    if isinstance(model, (str, os.PathLike)):
        logger.info("loading %s from %s", name, model)
        try:
            return load_model(model, device, progress)
        except (OSError, ValueError) as error:  # a user's folder or id: one line naming it, as the CLI reports it
            message = " ".join(str(error).split())
            raise ValueError(f"`model` {name}={str(model)!r}: cannot load a pipeline: {message}") from None
    return model


def _source(name: str, model: Any, sources: Mapping[str, str] | None) -> str | None:
    if sources and name in sources:
        return sources[name]
    return str(model) if isinstance(model, (str, os.PathLike)) else None


def _sample_size(model: Any) -> int:
    for part in ("encoder", "unet"):
        if getattr(model, part, None) is not None:
            return int(getattr(model, part).config.sample_size)
    return int(model.sample_size)


def _check_swap_ranges(models: Mapping[str, Any], ranges: Sequence[tuple[int, int]] | None) -> None:
    """The swapped ranges must lie in `[0, T)` of every partitioned model (EvaluationConfig checks `0 <= lo < hi`)."""
    for name, model in models.items():
        partition = getattr(model, "partition", None)
        if ranges and partition is not None:
            T = partition.num_train_timesteps
            bad = [r for r in ranges if r[1] > T]
            if bad:
                raise ValueError(f"`swap_ranges` {bad} exceed T={T} of model {name!r}.")


# -------------------------------------------------------------------------------------------------------- data
def _shapes_data(
    dataset: str | None,
    shapes_dataset: str | None,
    shapes_factors: Any,
    split: str,
    num_images: int,
    seed: int,
    resolution: int,
) -> tuple[Any, dict[str, Any]]:
    """The dataset of the shapes protocol and what `report["dataset"]` records of it."""
    from ..data import load_image_dataset
    from ..data.shapes import SHAPES_DATASET_NAME, SHAPES_DATASETS, ShapeFactor, factors_to_json, generate_shapes

    name = dataset or shapes_dataset or SHAPES_DATASET_NAME
    if name not in SHAPES_DATASETS:
        data = load_image_dataset(dataset_name=name, split=split, num_images=num_images, resolution=resolution)
        return data, {"name": name, "split": split}
    factors = SHAPES_DATASETS[name]()
    if isinstance(shapes_factors, (str, os.PathLike)):
        shapes_factors = json.loads(Path(shapes_factors).read_text())
    if shapes_factors is not None:
        factors = [f if isinstance(f, ShapeFactor) else ShapeFactor(**f) for f in shapes_factors]
    data = generate_shapes(num_images, seed=seed, resolution=resolution, factors=factors)
    return data, {"name": name, "seed": seed, "factor_specs": json.loads(factors_to_json(factors))["factors"]}


def _schema(protocol: str, columns: Mapping[str, str] | None, image_column: str | None, attributes_column: str | None):
    from ..data.schemas import CELEBA_SCHEMA, LFW_SCHEMA

    schema = {"celeba": CELEBA_SCHEMA, "lfw": LFW_SCHEMA}[protocol]
    changes = {"image_column": image_column, "attributes_column": attributes_column}
    try:
        return schema.with_columns(columns or {}, **{k: v for k, v in changes.items() if v})
    except ValueError as error:
        raise ValueError(f"`columns`: {' '.join(str(error).split())}") from None


def _attribute_report(pipes, protocol, dataset, schema, config, max_samples, load_kwargs) -> dict[str, Any]:
    """The celeba / lfw protocol of every model: linear probes of the attributes (one epoch chosen jointly)."""
    from .adapters import pipeline_functions
    from .protocols import attribute_protocol
    from .suite import json_safe

    probe = dataclasses.replace(config.probe, selection="joint")
    report: dict[str, Any] = {"protocol": protocol, "dataset": dataset, "models": {}}
    for name, pipe in pipes.items():
        size = int(pipe.encoder.config.sample_size)
        if size != schema.resolution:
            schema = schema.with_columns({}, resolution=size)
        report["models"][name] = attribute_protocol(
            pipeline_functions(pipe).encode_fn,
            dataset,
            schema,
            probe,
            seed=config.seed,
            max_samples=max_samples,
            **load_kwargs,
        )
    return json_safe(report)
