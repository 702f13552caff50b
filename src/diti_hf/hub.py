"""Model cards and Hub uploads for [`DiTiPipeline`]: a card generated from the pipeline's own configs, pushed with the
safetensors weights in one commit; and the upload of the browser app's Space folder."""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from . import __version__
from .partition import TimestepPartition

if TYPE_CHECKING:
    import torch

    from .pipelines.pipeline_diti import DiTiPipeline

__all__ = [
    "MODEL_CARD_TAGS",
    "check_upload_arguments",
    "create_model_card",
    "metrics_from_report",
    "partition_rows",
    "partition_table",
    "push_pipeline_to_hub",
    "save_model_card",
]

MODEL_CARD_TAGS = ["diti", "diffusers", "representation-learning", "image-feature-extraction", "unsupervised"]
PIPELINE_TAG = "image-feature-extraction"
TEMPLATE_NAME = "model_card_template.md"


# ---------------------------------------------------------------------------------------------------- partition table
def partition_rows(partition: TimestepPartition) -> list[dict[str, Any]]:
    r"""
    Compact description of a [`TimestepPartition`]: consecutive chunks of equal width (and, for a staged partition,
    of the same stage) are grouped into one row.

    Args:
        partition ([`TimestepPartition`]): The partition of `z`.

    Returns:
        `list[dict]`: One dict per row with `stage` (`int` or `None` for a uniform partition), `chunks` `(i, j)`,
        `timesteps` `(lo, hi)` and `dims` `(start, end)` (all half-open) and `width` (dims per chunk).

    Examples:
    ```py
    >>> from diti_hf import TimestepPartition
    >>> partition_rows(TimestepPartition(latent_dim=512, num_chunks=64))
    [{'stage': None, 'chunks': (0, 64), 'timesteps': (0, 1000), 'dims': (0, 512), 'width': 8}]
    ```
    """
    stage_ends = partition.stages
    rows: list[dict[str, Any]] = []
    for i in range(partition.num_chunks):
        start, end = partition.chunk_dims(i)
        t_lo, t_hi = partition.chunk_timesteps(i)
        stage = None if stage_ends is None else next(s for s, e in enumerate(stage_ends) if t_lo < e)
        last = rows[-1] if rows else None
        if last is not None and last["stage"] == stage and last["width"] == end - start:
            last["chunks"] = (last["chunks"][0], i + 1)
            last["timesteps"] = (last["timesteps"][0], t_hi)
            last["dims"] = (last["dims"][0], end)
        else:
            rows.append(
                {
                    "stage": stage,
                    "chunks": (i, i + 1),
                    "timesteps": (t_lo, t_hi),
                    "dims": (start, end),
                    "width": end - start,
                }
            )
    return rows


def _span(lo: int, hi: int) -> str:
    """`i` for a one-element half-open range `[i, i + 1)`, else `i–(hi − 1)`."""
    return str(lo) if hi - lo == 1 else f"{lo}–{hi - 1}"


def partition_table(partition: TimestepPartition) -> str:
    r"""
    Markdown table of [`partition_rows`]: chunks → time-steps → dims of `z`, with a stage column for a staged
    partition.

    Args:
        partition ([`TimestepPartition`]): The partition of `z`.

    Returns:
        `str`: A markdown table (no trailing newline).
    """
    staged = partition.stages is not None
    header = ["Stage"] if staged else []
    header += ["Chunks", "Time-steps `t`", "Dims of `z`", "Dims per chunk"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in partition_rows(partition):
        cells = [f"{row['stage']} (t < {partition.stages[row['stage']]})"] if staged else []
        cells += [
            _span(*row["chunks"]),
            f"[{row['timesteps'][0]}, {row['timesteps'][1]})",
            f"[{row['dims'][0]}, {row['dims'][1]})",
            str(row["width"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- metrics
def _check_metric(name: Any, value: Any) -> float:
    if not isinstance(name, str) or not name:
        raise ValueError(f"`metrics` keys must be non-empty strings, got {name!r}.")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"`metrics[{name!r}]` must be a finite number, got {value!r}.")
    return float(value)


def metrics_from_report(report: Mapping[str, Any], model: str = "model") -> dict[str, float]:
    r"""
    Headline numbers of one model in a report of [`~diti_hf.evaluation.evaluate_pipeline`], for the `metrics`
    argument of [`create_model_card`]. Only numbers present (and finite) in the report are returned.

    Args:
        report (`dict`): The report (or the parsed `report.json`).
        model (`str`, defaults to `"model"`): The model's name in `report["models"]`.

    Returns:
        `dict[str, float]`: Any of `probe_mean_accuracy`, `probe_mean_average_precision`,
        `alignment_spearman_timestep_vs_granularity`, `reconstruction_mse`, `reconstruction_psnr`,
        `reconstruction_ssim`.
    """
    models = report.get("models") if isinstance(report, Mapping) else None
    if not isinstance(models, Mapping) or model not in models:
        available = sorted(models) if isinstance(models, Mapping) else []
        raise ValueError(f"`model`={model!r} is not in the report; it has models {available}.")
    entry = models[model]
    candidates = {
        "probe_mean_accuracy": (entry.get("probe") or {}).get("mean_accuracy"),
        "probe_mean_average_precision": (entry.get("probe") or {}).get("mean_average_precision"),
        "alignment_spearman_timestep_vs_granularity": (entry.get("alignment") or {}).get(
            "spearman_timestep_vs_granularity"
        ),
        "reconstruction_mse": (entry.get("reconstruction") or {}).get("mse"),
        "reconstruction_psnr": (entry.get("reconstruction") or {}).get("psnr"),
        "reconstruction_ssim": (entry.get("reconstruction") or {}).get("ssim"),
    }
    return {
        name: float(value)
        for name, value in candidates.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    }


def _metrics_table(metrics: Mapping[str, float]) -> str:
    lines = ["| Metric | Value |", "|---|---|"]
    lines += [f"| `{name}` | {value:.4g} |" for name, value in metrics.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- model card
def _num_params(module: torch.nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    short = f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"
    return f"{n:,} ({short})"


def _is_repo_id(value: Any) -> bool:
    if not isinstance(value, str) or value.count("/") != 1 or os.path.exists(value):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _preprocessing(pipe: DiTiPipeline) -> str:
    processor = getattr(pipe, "image_processor", None)
    size = pipe.encoder.config.sample_size
    if processor is None:
        return f"shorter side resized to {size}, centre crop {size}×{size}"
    crop = getattr(processor, "crop_box", None)
    resize = f"resize to {processor.resolution}×{processor.resolution} ({processor.interpolation})"
    if crop is None:
        return f"`{type(processor).__name__}`: {resize}"
    top, left, height, width = crop
    return f"`{type(processor).__name__}`: crop {height}×{width} at top={top}, left={left}, then {resize}"


def _scheduler_summary(scheduler: Any) -> str:
    config = scheduler.config
    parts = [f"T = {config.num_train_timesteps}"]
    if config.get("trained_betas") is not None:
        parts.append("trained betas")
    else:
        parts.append(f"{config.beta_schedule} betas {config.beta_start:g}–{config.beta_end:g}")
    parts.append(f"{config.get('prediction_type', 'epsilon')} prediction")
    if "timestep_spacing" in config:
        parts.append(f'`timestep_spacing="{config.timestep_spacing}"`')
    return ", ".join(parts)


def _template() -> str:
    return resources.files("diti_hf").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def _check_datasets(datasets: str | Sequence[str] | None) -> list[str] | None:
    """`datasets` as a list of data set ids (one id may be given as a string)."""
    if datasets is None:
        return None
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if not datasets or not all(isinstance(d, str) and d for d in datasets):
        raise ValueError(f"`datasets` must be a non-empty list of data set ids, got {datasets!r}.")
    return datasets


def _resolve_base_model(pipe: DiTiPipeline, base_model: str | None) -> str | None:
    """`base_model` checked as a Hub repo id, else the UNet's `_name_or_path` when that is one."""
    if base_model is None:
        name_or_path = pipe.unet.config.get("_name_or_path")
        return name_or_path if _is_repo_id(name_or_path) else None
    if not _is_repo_id(base_model):
        raise ValueError(f"`base_model` must be a Hub repo id 'namespace/name', got {base_model!r}.")
    return base_model


def _check_metrics(
    metrics: Mapping[str, float] | None, eval_dataset: str | None, datasets: list[str] | None
) -> tuple[dict[str, float], str | None]:
    """The checked `metrics` (empty when not given) and the data set they were measured on."""
    if metrics is None:
        return {}, eval_dataset
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"`metrics` must be a non-empty dict name -> value, got {metrics!r}.")
    checked = {name: _check_metric(name, value) for name, value in metrics.items()}
    eval_dataset = eval_dataset or (datasets[0] if datasets else None)
    if eval_dataset is None:
        raise ValueError("`metrics` need the data set they were measured on: pass `eval_dataset` or `datasets`.")
    return checked, eval_dataset


def _card_data(
    *,
    license: str,
    base_model: str | None,
    datasets: list[str] | None,
    model_name: str,
    metrics: Mapping[str, float],
    eval_dataset: str | None,
    eval_split: str | None,
) -> ModelCardData:
    """The card's YAML metadata; `model-index` only when there are `metrics`."""
    eval_results = [
        EvalResult(
            task_type=PIPELINE_TAG,
            dataset_type=eval_dataset,
            dataset_name=eval_dataset,
            dataset_split=eval_split,
            metric_type=name,
            metric_name=name,
            metric_value=value,
        )
        for name, value in metrics.items()
    ]
    return ModelCardData(
        library_name="diti_hf",
        license=license,
        base_model=base_model,
        datasets=datasets,
        tags=list(MODEL_CARD_TAGS),
        pipeline_tag=PIPELINE_TAG,
        # `model_name` only names the `model-index`; without results it would be a non-standard metadata key.
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _pipeline_facts(pipe: DiTiPipeline) -> dict[str, Any]:
    """Template variables read from the pipeline's configs: partition, images, components."""
    partition = pipe.partition
    encoder_config = pipe.encoder.config
    return {
        "latent_dim": partition.latent_dim,
        "num_chunks": partition.num_chunks,
        "num_train_timesteps": partition.num_train_timesteps,
        "partition_kind": "staged" if partition.stages is not None else "uniform",
        "mask_mode": partition.mask_mode,
        "partition_table": partition_table(partition),
        "example_range": (partition.num_train_timesteps // 2, partition.num_train_timesteps),
        "image_size": encoder_config.sample_size,
        "in_channels": encoder_config.in_channels,
        "preprocessing": _preprocessing(pipe),
        "unet_params": _num_params(pipe.unet),
        "encoder_params": _num_params(pipe.encoder),
        "decoder_params": _num_params(pipe.decoder),
        "scheduler_class": type(pipe.scheduler).__name__,
        "scheduler_summary": _scheduler_summary(pipe.scheduler),
    }


# Long for its docstring (one entry per argument); the checks and the card's parts are the helpers above.
def create_model_card(
    pipe: DiTiPipeline,
    *,
    model_name: str | None = None,
    datasets: str | Sequence[str] | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    metrics: Mapping[str, float] | None = None,
    eval_dataset: str | None = None,
    eval_split: str | None = None,
    training_command: str | None = None,
    eval_command: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    r"""
    Writes the model card (`README.md`) of a DiTi pipeline from the package template
    (`diti_hf/model_card_template.md`): YAML metadata for the Hub, what DiTi is, the model's facts read from the
    pipeline's configs (latent size, partition table, image size and preprocessing, parameter counts), usage snippets,
    the training/evaluation commands and metrics when given, limitations and the citation.

    No number is invented: the `model-index` and the results table appear only when `metrics` is given.

    Args:
        pipe ([`DiTiPipeline`]): The pipeline the card describes.
        model_name (`str`, *optional*): Title of the card and name in `model-index`; defaults to the repo name or
            `"DiTi model"`.
        datasets (`str` or `list[str]`, *optional*): Hub ids of the training data sets.
        license (`str`, defaults to `"apache-2.0"`): Hub license identifier.
        base_model (`str`, *optional*): Hub id of the frozen DDPM. Defaults to the UNet's `_name_or_path` when it
            was loaded from a Hub repo id in this session.
        metrics (`dict[str, float]`, *optional*): Metric name → value, e.g. from [`metrics_from_report`]. Written to
            `model-index` and to a results table.
        eval_dataset (`str`, *optional*): Data set the `metrics` were measured on; defaults to the first of
            `datasets`. Required with `metrics` when `datasets` is not given.
        eval_split (`str`, *optional*): Split the `metrics` were measured on.
        training_command (`str`, *optional*): Command that trained the model (shown in a `bash` block).
        eval_command (`str`, *optional*): Command that evaluated it.
        extra_sections (`dict[str, str]`, *optional*): Section title → markdown body, added before the limitations.
        repo_id (`str`, *optional*): Hub repo id used in the snippets; defaults to `"path/or/hub-id"`.

    Returns:
        [`huggingface_hub.ModelCard`]: The card; `card.save(path)` or `card.push_to_hub(repo_id)` write it.

    Examples:
    ```py
    >>> from diti_hf import DiTiPipeline
    >>> from diti_hf.hub import create_model_card
    >>> pipe = DiTiPipeline.from_pretrained("out/diti")
    >>> card = create_model_card(pipe, repo_id="me/diti-shapes", datasets=["me/shapes"])
    >>> card.data.pipeline_tag
    'image-feature-extraction'
    ```
    """
    import jinja2

    if not isinstance(license, str) or not license:
        raise ValueError(f"`license` must be a non-empty Hub license id, got {license!r}.")
    if repo_id is not None and not isinstance(repo_id, str):
        raise ValueError(f"`repo_id` must be a string, got {repo_id!r}.")
    datasets = _check_datasets(datasets)
    base_model = _resolve_base_model(pipe, base_model)
    if model_name is None:
        model_name = repo_id.rstrip("/").split("/")[-1] if repo_id else "DiTi model"
    checked_metrics, eval_dataset = _check_metrics(metrics, eval_dataset, datasets)
    card_data = _card_data(
        license=license,
        base_model=base_model,
        datasets=datasets,
        model_name=model_name,
        metrics=checked_metrics,
        eval_dataset=eval_dataset,
        eval_split=eval_split,
    )
    if extra_sections is not None and not isinstance(extra_sections, Mapping):
        raise ValueError(f"`extra_sections` must be a dict title -> markdown, got {type(extra_sections).__name__}.")

    environment = jinja2.Environment(keep_trailing_newline=True, autoescape=False)
    content = environment.from_string(_template()).render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id or "path/or/hub-id",
        base_model=base_model,
        training_command=(training_command or "").strip(),
        eval_command=(eval_command or "").strip(),
        metrics_table=_metrics_table(checked_metrics) if checked_metrics else "",
        eval_dataset=eval_dataset,
        eval_split=eval_split,
        extra_sections=[(str(t).strip(), str(b).strip()) for t, b in (extra_sections or {}).items()],
        **_pipeline_facts(pipe),
    )
    return ModelCard(content)


def save_model_card(pipe: DiTiPipeline, folder: str | os.PathLike, **kwargs: Any) -> Path:
    r"""
    Writes the card of [`create_model_card`] as `README.md` into `folder` (e.g. a folder written by
    `pipe.save_pretrained`), replacing any existing one.

    Args:
        pipe ([`DiTiPipeline`]): The pipeline the card describes.
        folder (`str` or `os.PathLike`): An existing folder.
        kwargs: Keyword arguments of [`create_model_card`].

    Returns:
        `pathlib.Path`: The path of the written `README.md`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` must be an existing folder, got {str(folder)!r}.")
    path = folder / "README.md"
    create_model_card(pipe, **kwargs).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- upload
def check_upload_arguments(repo_id: Any, commit_message: Any) -> None:
    """Raises `ValueError` unless `repo_id` is a valid Hub repo id and `commit_message` a non-empty string: checked
    before any request, by every upload."""
    if not isinstance(repo_id, str):
        raise ValueError(f"`repo_id` must be a Hub repo id string 'namespace/name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id`={repo_id!r} is not a valid Hub repo id: {error}") from error
    if not isinstance(commit_message, str) or not commit_message.strip():
        raise ValueError(f"`commit_message` must be a non-empty string, got {commit_message!r}.")


def push_pipeline_to_hub(
    pipe: DiTiPipeline,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload DiTi pipeline",
    create_pr: bool = False,
    card_kwargs: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> str:
    r"""
    Uploads a pipeline to the Hub in one commit: creates the repo if needed, saves the pipeline with safetensors
    weights into a temporary folder, adds the model card of [`create_model_card`] as `README.md` and uploads the
    folder. [`DiTiPipeline.push_to_hub`] calls this function.

    Args:
        pipe ([`DiTiPipeline`]): The pipeline to upload.
        repo_id (`str`): `"namespace/name"` (or `"name"` for the token's own namespace).
        token (`str`, *optional*): Hub token; defaults to the logged-in one.
        private (`bool`, *optional*): Visibility of a newly created repo (ignored for an existing one).
        revision (`str`, *optional*): Branch to commit to; created from the default branch when missing.
        commit_message (`str`, defaults to `"Upload DiTi pipeline"`): Commit summary.
        create_pr (`bool`, defaults to `False`): Open a pull request against the default branch instead of committing
            to it (cannot be combined with `revision`).
        card_kwargs (`dict`, *optional*): Keyword arguments of [`create_model_card`] (`datasets`, `metrics`,
            `training_command`, ...); `repo_id` defaults to the created repo's id.
        endpoint (`str`, *optional*): Hub endpoint; defaults to `HF_ENDPOINT` or https://huggingface.co.

    Returns:
        `str`: The URL of the commit.

    Examples:
    ```py
    >>> from diti_hf import DiTiPipeline
    >>> pipe = DiTiPipeline.from_pretrained("out/diti")
    >>> pipe.push_to_hub("me/diti-shapes", card_kwargs={"datasets": ["me/shapes"]})
    'https://huggingface.co/me/diti-shapes/commit/...'
    ```
    """
    check_upload_arguments(repo_id, commit_message)
    if create_pr and revision not in (None, "main"):
        raise ValueError(
            f"`create_pr=True` opens a pull request against the default branch; it cannot be combined with "
            f"`revision`={revision!r}."
        )
    if card_kwargs is not None and not isinstance(card_kwargs, Mapping):
        raise ValueError(f"`card_kwargs` must be a dict of `create_model_card` arguments, got {card_kwargs!r}.")
    # Build the card once before any request, so that bad card arguments fail before the repo is created.
    create_model_card(pipe, **{"repo_id": repo_id, **dict(card_kwargs or {})})

    api = HfApi(endpoint=endpoint, token=token, library_name="diti_hf", library_version=__version__)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    resolved_id = repo_url.repo_id or repo_id
    if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(resolved_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diti_hf-push-") as folder:
        pipe.save_pretrained(folder, safe_serialization=True)
        save_model_card(pipe, folder, **{"repo_id": resolved_id, **dict(card_kwargs or {})})
        commit = api.upload_folder(
            repo_id=resolved_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )
    return commit.commit_url
