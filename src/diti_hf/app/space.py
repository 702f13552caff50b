"""The browser app as a Hugging Face Space: check a Space folder and upload it, with the `diti_hf` source and
optionally a pipeline folder next to its `app.py`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard

from .. import __version__
from ..hub import check_upload_arguments
from ..pipelines.checks import check_pipeline_folder

__all__ = ["SPACE_FILES", "check_space_folder", "push_space_to_hub"]

SPACE_FILES = ("README.md", "app.py", "requirements.txt")
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
_NOT_UPLOADED = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".ipynb_checkpoints")


def check_space_folder(folder: str | os.PathLike) -> SpaceCard:
    r"""
    Checks that `folder` is a Hugging Face Space ready to upload: `README.md` with Space front matter (a known `sdk`;
    its `app_file`, default `app.py`, present), `app.py` and `requirements.txt`.

    Args:
        folder (`str` or `os.PathLike`): The Space folder, e.g. `spaces/diti-shapes32`.

    Returns:
        [`huggingface_hub.SpaceCard`]: The parsed card.

    Raises:
        `ValueError`: What is missing or wrong.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` must be an existing Space folder, got {str(folder)!r}.")
    missing = [name for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"the Space folder {str(folder)!r} lacks {missing}; a Space needs {list(SPACE_FILES)}.")
    card = SpaceCard.load(folder / "README.md")
    sdk = card.data.get("sdk")
    if sdk not in SPACE_SDKS:
        raise ValueError(
            f"{str(folder / 'README.md')!r}: the front matter must set `sdk` to one of {SPACE_SDKS}, got {sdk!r}."
        )
    app_file = card.data.get("app_file") or "app.py"
    if not (folder / app_file).is_file():
        raise ValueError(f"{str(folder / 'README.md')!r} names app_file {app_file!r}, which is not in the folder.")
    return card


def push_space_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    model_dir: str | os.PathLike | None = None,
    include_package: bool = True,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload DiTi Space",
    endpoint: str | None = None,
) -> str:
    r"""
    Uploads a Space folder (e.g. `spaces/diti-shapes32`, the browser app of `diti_hf.app`) to the Hub in one commit,
    creating the Space if needed.

    The Space installs `requirements.txt`; `diti_hf` itself is not on a package index, so by default its source (this
    installed package) is uploaded next to `app.py` as `diti_hf/`. A pipeline folder given as `model_dir` is uploaded
    as `model/`, which the Space's `app.py` loads instead of the Hub model named in its card.

    Args:
        folder (`str` or `os.PathLike`): The Space folder (checked with [`check_space_folder`]).
        repo_id (`str`): `"namespace/name"` of the Space (or `"name"` for the token's own namespace).
        model_dir (`str` or `os.PathLike`, *optional*): A pipeline folder to bundle as `model/`.
        include_package (`bool`, defaults to `True`): Bundle the `diti_hf` source as `diti_hf/`.
        token (`str`, *optional*): Hub token; defaults to the logged-in one.
        private (`bool`, *optional*): Visibility of a newly created Space (ignored for an existing one).
        revision (`str`, *optional*): Branch to commit to; created from the default branch when missing.
        commit_message (`str`, defaults to `"Upload DiTi Space"`): Commit summary.
        endpoint (`str`, *optional*): Hub endpoint; defaults to `HF_ENDPOINT` or https://huggingface.co.

    Returns:
        `str`: The URL of the commit.

    Examples:
    ```py
    >>> from diti_hf.app.space import push_space_to_hub
    >>> push_space_to_hub("spaces/diti-shapes32", "me/diti-shapes32", model_dir="pretrained/diti-shapes32")
    'https://huggingface.co/spaces/me/diti-shapes32/commit/...'
    ```
    """
    check_upload_arguments(repo_id, commit_message)
    card = check_space_folder(folder)
    if model_dir is not None:
        check_pipeline_folder(model_dir)  # a broken model would only fail once the Space boots

    api = HfApi(endpoint=endpoint, token=token, library_name="diti_hf", library_version=__version__)
    repo_url = api.create_repo(repo_id, repo_type="space", space_sdk=card.data.sdk, private=private, exist_ok=True)
    resolved_id = repo_url.repo_id or repo_id
    if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(resolved_id, branch=revision, repo_type="space", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diti_hf-space-") as staging:
        stage = Path(staging) / "space"
        shutil.copytree(folder, stage, ignore=_NOT_UPLOADED)
        if include_package:
            package = Path(__file__).resolve().parents[1]  # diti_hf/
            shutil.copytree(package, stage / "diti_hf", ignore=_NOT_UPLOADED, dirs_exist_ok=True)
        if model_dir is not None:
            shutil.copytree(model_dir, stage / "model", ignore=_NOT_UPLOADED, dirs_exist_ok=True)
        commit = api.upload_folder(
            repo_id=resolved_id,
            folder_path=stage,
            repo_type="space",
            commit_message=commit_message,
            revision=revision,
        )
    return commit.commit_url
