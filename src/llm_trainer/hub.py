"""The Hugging Face Hub: where ``hf:`` names a model on it, the one download of a model
(``--init-from hf:OWNER/NAME[@REVISION]``) and the one upload (``models push``).

``hf:X`` means the same for models as for datasets (``--dataset hf:NAME``): a local folder
when ``X`` is one, else a Hub id. A Hub model is downloaded through ``huggingface_hub``
(its cache, its token) at the commit the Hub names for the revision asked, and that commit
is what the new model records (``hf:OWNER/NAME@SHA``), so that the same weights are found
again. The machine may have no network: the Hub is asked only after a TCP probe answers
within seconds (``hub_reachable``); without it a snapshot already in the cache is used, and
otherwise one line says how to pass a local folder. No torch, and ``huggingface_hub`` is
imported only when the Hub is used.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llm_trainer.errors import LLMTrainerError, NotFoundError, UsageError

PREFIX = "hf:"
ASK_TIMEOUT_S = 10.0  # one question to the Hub (model_info): its answer, not a download
# what an import reads from a model repository (besides its weights): configs, tokenizer,
# chat template, model card (its license)
SIDE_FILES = ("*.json", "*.jinja", "README.md")
# the weights, in the order hf_import prefers them
WEIGHTS = (("model.safetensors",), ("model.safetensors.index.json", "*.safetensors"),
           ("pytorch_model.bin",))
LOCAL_FORM = "--init-from hf:/path/to/folder (a local folder: config.json, " \
             "model.safetensors, tokenizer.json)"
# OWNER/NAME or NAME, as the Hub spells repository ids; @REVISION: a branch, tag or commit
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?:@(?P<rev>[\w./-]+))?")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub within ``timeout`` seconds? Honours
    HF_HUB_OFFLINE and HF_ENDPOINT. Decides in seconds, not the client's ~25 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hub, as ``hf:OWNER/NAME[@REVISION]`` names it."""

    repo_id: str
    revision: str | None = None  # as asked: a branch, tag or commit (None: main)

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Snapshot:
    """A Hub model on this machine: its folder (in the Hub cache) and the commit it is."""

    path: Path
    repo_id: str
    commit: str

    @property
    def pinned(self) -> str:
        """``OWNER/NAME@SHA``: what a model started from it records."""
        return f"{self.repo_id}@{self.commit}"


def parse_model_spec(spec: str) -> Path | HubModel:
    """``hf:X``: a local folder when ``X`` is one (or looks like a path: ``/``, ``~``, ``.``),
    else a Hub id (``OWNER/NAME``, optionally ``@REVISION``)."""
    text = spec[len(PREFIX):].strip() if spec.startswith(PREFIX) else spec.strip()
    path = Path(text).expanduser()
    if path.is_dir() or text.startswith(("/", "~", ".")):
        return path.resolve()
    found = _HUB_ID.fullmatch(text)
    if found is None:
        return path.resolve()
    return HubModel(found["repo"], found["rev"])


def _refusal(what: str) -> UsageError:
    return UsageError(what, hint=f"pass a folder instead: {LOCAL_FORM}")


def download_model(model: HubModel, *, check: Callable[[Path], None] | None = None,
                   reachable=hub_reachable) -> Snapshot:
    """The model's files in the Hub cache, at the commit its revision names now. Online:
    one question to the Hub (which commit, which files), then ``snapshot_download`` of the
    files an import reads, at that commit: the small ones first, which ``check`` is given
    (it raises to refuse the model before its weights come), then the weights. Offline
    (HF_HUB_OFFLINE, or the Hub not answering the probe): the snapshot already in the cache,
    or one line naming the local-folder form. A repository or revision the Hub does not have
    is refused in one line."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import (  # (not .errors: older releases lack it)
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    why = "the Hugging Face Hub is unreachable"
    if reachable():
        try:
            info = HfApi().model_info(model.repo_id, revision=model.revision,
                                      timeout=ASK_TIMEOUT_S)
        except GatedRepoError:
            raise _refusal(f"--init-from hf:{model}: the repository is gated: accept its "
                           "terms on huggingface.co and log in (HF_TOKEN or `hf auth "
                           "login`)") from None
        except RevisionNotFoundError:
            raise NotFoundError(f"--init-from hf:{model}: {model.repo_id} has no revision "
                                f"{model.revision!r}",
                                hint="a branch, tag or commit of the repository") from None
        except RepositoryNotFoundError:
            raise NotFoundError(f"--init-from hf:{model}: no model {model.repo_id} on the "
                                "Hugging Face Hub (or it is private: log in with HF_TOKEN "
                                "or `hf auth login`)", hint=f"or pass a folder: {LOCAL_FORM}"
                                ) from None
        except HfHubHTTPError as exc:
            why = f"the Hugging Face Hub answered {_first_line(exc)}"
        except Exception as exc:  # the network, not the request: as if offline
            why = f"the Hugging Face Hub did not answer ({_first_line(exc)})"
        else:
            files = [s.rfilename for s in (info.siblings or [])]
            try:
                if check is not None:
                    check(Path(snapshot_download(model.repo_id, revision=info.sha,
                                                 allow_patterns=list(SIDE_FILES))))
                path = snapshot_download(model.repo_id, revision=info.sha,
                                         allow_patterns=[*SIDE_FILES, *weight_patterns(files)])
            except LLMTrainerError:
                raise
            except Exception as exc:  # the network or the disk, mid-download
                raise LLMTrainerError(f"--init-from hf:{model}: downloading commit {info.sha} "
                                      f"failed: {_first_line(exc)}",
                                      hint="run it again: the files downloaded so far stay in "
                                           "the Hub cache") from None
            return Snapshot(Path(path), model.repo_id, str(info.sha))
    path = _cached(model)
    if path is None:  # not a usage error: the same command works where the Hub answers
        raise LLMTrainerError(f"--init-from hf:{model}: {why} and the model is not in its "
                              "cache", hint=f"pass a folder instead: {LOCAL_FORM}")
    return Snapshot(path, model.repo_id, path.name)


def _cached(model: HubModel) -> Path | None:
    """The snapshot of ``model`` in the Hub cache, None when there is none. Asked with the
    patterns it was downloaded with (the client checks a snapshot against the repository's
    listing it cached, less what the patterns leave out): each kind of weights in turn, the
    first whose file is there."""
    from huggingface_hub import snapshot_download

    found = None
    for kind in WEIGHTS:
        try:
            found = Path(snapshot_download(model.repo_id, revision=model.revision,
                                           local_files_only=True,
                                           allow_patterns=[*SIDE_FILES, *kind]))
        except Exception:  # not cached, or cached without these files
            continue
        if (found / kind[0]).is_file():
            return found
    return found


def weight_patterns(files: list[str]) -> list[str]:
    """The weight files to download: the first kind the repository has (safetensors before
    a pickle); all of them when it has none we know (the import then names what is
    missing)."""
    for kind in WEIGHTS:
        if kind[0] in files:
            return list(kind)
    return [p for kind in WEIGHTS for p in kind]


def hub_id_of(folder: Path) -> str | None:
    """``OWNER/NAME`` when ``folder`` is a snapshot in the Hub cache
    (``.../models--OWNER--NAME/snapshots/SHA``), else None: a model card's ``base_model``
    must be a Hub id."""
    parts = Path(folder).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/")
    return None


@dataclass(frozen=True)
class Pushed:
    """What ``models push`` uploaded: the repository, its commit and the files."""

    repo_id: str
    url: str
    commit: str | None
    revision: str | None
    files: list[str]


def check_push(repo_id: str) -> None:
    """Before anything is exported: the repository id is one the Hub accepts, the Hub
    answers, and a token is there (HF_TOKEN, or the one `hf auth login` saved; we never
    store or print it)."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"{repo_id!r} is not a Hugging Face repository id",
                         hint="OWNER/NAME, e.g. my-user/my-model") from None
    if not hub_reachable():
        raise LLMTrainerError("the Hugging Face Hub is unreachable (HF_HUB_OFFLINE, or no "
                              "network): nothing was pushed",
                              hint="export it with `llm-trainer models export NAME --format "
                                   "hf --out FOLDER` and upload that folder from elsewhere")
    if not get_token():
        raise LLMTrainerError("no Hugging Face token: nothing was pushed",
                              hint="set HF_TOKEN, or log in once with `hf auth login`")


def push_folder(folder: Path, repo_id: str, *, private: bool = False,
                revision: str | None = None, message: str) -> Pushed:
    """Upload every file of ``folder`` to the model repository ``repo_id`` (created when
    missing, private with ``private``; an existing one keeps its visibility) on its main
    branch or ``revision`` (a branch, made from main when missing), as one commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit: Any = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                        revision=revision, commit_message=message)
    except HfHubHTTPError as exc:
        raise LLMTrainerError(f"pushing to {repo_id} failed: {_first_line(exc)}",
                              hint="check the token's write access to the repository "
                                   "(HF_TOKEN or `hf auth login`)") from None
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return Pushed(repo_id, str(getattr(commit, "commit_url", None) or url),
                  getattr(commit, "oid", None), revision, files)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
