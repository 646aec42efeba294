"""The Hugging Face Hub: ``--init-from hf:OWNER/NAME[@REV]`` (downloaded at a pinned commit,
or found in the Hub cache, or refused in one line at once when neither can be had), the model
card of ``models export --format hf`` and ``models push``.

The Hub is the internet, which this machine cannot have: its boundary (``HfApi`` methods and
``snapshot_download``) is replaced by ``FakeHub``, which serves a local folder and records
what we ask and send. What is behind it is real: the Hub cache layout (the offline path reads
it with the real ``snapshot_download(local_files_only=True)``), the TCP probe (a listening
socket stands for a reachable Hub), huggingface_hub's card parser.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants

from llm_trainer.app.options import LaunchOptions
from llm_trainer.cli import main
from llm_trainer.service import Service, TrainRequest
from tests.helpers import corpus_text, plan_only_hf_folder

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "acme/tiny-gpt2"
REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download


class FakeHub:
    """The Hub's side of the wire: one repository (``REPO``, the files of ``folder`` at
    commit ``SHA``), downloads written into ``cache`` as huggingface_hub lays it out."""

    def __init__(self, folder: Path, cache: Path) -> None:
        self.folder, self.cache = folder, cache
        self.asked: list[dict] = []  # model_info calls
        self.downloads: list[dict] = []  # snapshot_download calls (online)
        self.pushed: dict = {}

    def model_info(self, repo_id, *, revision=None, timeout=None, **_):
        self.asked.append({"repo_id": repo_id, "revision": revision, "timeout": timeout})
        if repo_id != REPO:
            from huggingface_hub.errors import RepositoryNotFoundError

            raise RepositoryNotFoundError("404 Repository Not Found", response=SimpleNamespace(
                headers={}, status_code=404, request=None, url=""))
        files = [p.name for p in self.folder.iterdir()]
        return SimpleNamespace(sha=SHA, siblings=[SimpleNamespace(rfilename=f) for f in files])

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None,
                          local_files_only=False, **kw):
        if local_files_only:  # the cache, as the real client reads it
            return REAL_SNAPSHOT_DOWNLOAD(repo_id, revision=revision,
                                          allow_patterns=allow_patterns,
                                          local_files_only=True, **kw)
        self.downloads.append({"repo_id": repo_id, "revision": revision,
                               "allow_patterns": list(allow_patterns or [])})
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        snap = repo / "snapshots" / revision
        snap.mkdir(parents=True, exist_ok=True)
        for f in self.folder.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns or ["*"]):
                shutil.copy2(f, snap / f.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        return str(snap)

    # the upload side
    def create_repo(self, repo_id, *, private=None, exist_ok=False, **_):
        self.pushed.update(repo_id=repo_id, private=private, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, exist_ok=False, **_):
        self.pushed.update(branch=branch)

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None, **_):
        folder = Path(folder_path)  # a temporary folder: read it now
        self.pushed.update(upload_repo=repo_id, revision=revision, message=commit_message,
                           files=sorted(p.name for p in folder.iterdir()),
                           card=(folder / "README.md").read_text())
        return SimpleNamespace(oid="f" * 40, commit_url=f"https://huggingface.co/{repo_id}/"
                                                         f"commit/{'f' * 40}")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache for this test (in this process and in the processes it starts)."""
    path = tmp_path / "hub-cache"
    path.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(path))
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path


@pytest.fixture
def online(monkeypatch):
    """The Hub answers: HF_ENDPOINT at a socket that accepts connections (the probe's TCP
    connect succeeds), HF_HUB_OFFLINE unset."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield
    server.close()


@pytest.fixture
def hub(tmp_path, cache, monkeypatch) -> FakeHub:
    folder = plan_only_hf_folder(tmp_path / "on-the-hub")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (folder / "pytorch_model.bin").write_bytes(b"")  # not downloaded: safetensors is there
    fake = FakeHub(folder, cache)
    for name in ("model_info", "create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name,
                            lambda self, *a, _n=name, **k: getattr(fake, _n)(*a, **k))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def plan(home: Path, init_from: str):
    home.mkdir(parents=True, exist_ok=True)
    (home / "corpus.txt").write_text(corpus_text(5000))
    return Service(home).planner.plan_train(TrainRequest(
        preset="tiny", init_from=init_from,
        options=LaunchOptions(dataset=str(home / "corpus.txt"))))


def test_a_hub_id_is_downloaded_at_the_commit_the_hub_names_and_that_commit_is_recorded(
        tmp_path, hub, online):
    p = plan(tmp_path, f"hf:{REPO}")
    assert hub.asked == [{"repo_id": REPO, "revision": None, "timeout": 10.0}]
    small, down = hub.downloads  # config and tokenizer first (checked), then the weights
    assert (down["repo_id"], down["revision"]) == (REPO, SHA)  # pinned, not "main"
    assert "model.safetensors" not in small["allow_patterns"]
    assert "model.safetensors" in down["allow_patterns"]
    assert "pytorch_model.bin" not in down["allow_patterns"]
    assert p.config.finetune.init_from == f"hf:{REPO}@{SHA}"
    assert p.init.checkpoint == hub.cache / "models--acme--tiny-gpt2" / "snapshots" / SHA
    assert p.new_model_base.startswith("tiny-gpt2")  # named after the model, not the commit
    assert not p.notes  # the commit is recorded, not warned about


def test_a_revision_is_asked_for_and_its_commit_recorded(tmp_path, hub, online):
    p = plan(tmp_path, f"hf:{REPO}@v1.0")
    assert hub.asked[0]["revision"] == "v1.0"
    assert p.config.finetune.init_from == f"hf:{REPO}@{SHA}"


def test_offline_a_model_in_the_hub_cache_is_used_without_asking(tmp_path, hub, online,
                                                                  monkeypatch):
    plan(tmp_path / "a", f"hf:{REPO}")  # downloaded once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (f"hf:{REPO}", f"hf:{REPO}@{SHA}"):
        p = plan(tmp_path / spec[-6:], spec)
        assert p.config.finetune.init_from == f"hf:{REPO}@{SHA}"
    assert len(hub.asked) == 1 and len(hub.downloads) == 2  # the first plan's


def test_a_model_the_hub_does_not_have_is_refused_in_one_line(tmp_path, hub, online,
                                                              monkeypatch, capsys):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    assert main(["train", "--init-from", "hf:acme/nope", "--dataset", "x.txt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --init-from hf:acme/nope: no model acme/nope on the Hugging Face " \
                     "Hub (or it is private: log in with HF_TOKEN or `hf auth login`)"


def test_a_hub_model_this_gpt_cannot_represent_is_refused_before_its_weights_come(
        tmp_path, hub, online):
    config = json.loads((hub.folder / "config.json").read_text())
    (hub.folder / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(Exception, match="holds a mamba model"):
        plan(tmp_path, f"hf:{REPO}")
    (small,) = hub.downloads
    assert not any("safetensors" in p or ".bin" in p for p in small["allow_patterns"])


def test_unreachable_and_not_cached_fails_at_once_naming_the_folder_form(
        tmp_path, cache, monkeypatch, capsys):
    """No network, HF_HUB_OFFLINE unset: the client's retries would take ~25 s."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    (tmp_path / "c.txt").write_text("text")
    start = time.monotonic()
    assert main(["train", "--init-from", "hf:openai-community/gpt2", "--dataset",
                 str(tmp_path / "c.txt")]) == 1
    assert time.monotonic() - start < 3
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: --init-from hf:openai-community/gpt2: the Hugging Face Hub is unreachable and "
        "the model is not in its cache",
        "hint: pass a folder instead: --init-from hf:/path/to/folder (a local folder: "
        "config.json, model.safetensors, tokenizer.json)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "hub-cache"]


def test_hf_colon_is_a_local_folder_when_it_is_one(tmp_path, monkeypatch):
    """The same rule as --dataset hf:NAME: a folder that exists is read where it is, even
    when its name looks like a Hub id (nothing is asked: HF_HUB_OFFLINE is set here)."""
    plan_only_hf_folder(tmp_path / "acme" / "tiny-gpt2")
    monkeypatch.chdir(tmp_path)
    p = plan(tmp_path / "home", f"hf:{REPO}")
    assert p.config.finetune.init_from == f"hf:{tmp_path / 'acme' / 'tiny-gpt2'}"


# --------------------------------------------------------------------------- the model card


def card_of(facts_kw: dict, load_as: str = "/x/out", **kw) -> ModelCard:
    from llm_trainer.inference.model_card import CardFacts, model_card

    facts = CardFacts(**{"name": "m", "checkpoint": "step-00000010", "step": 10,
                         "epoch": 0.5, "shape": "2 layers", "family": "GPT-2",
                         "config": {}, **facts_kw})
    return ModelCard(model_card(facts, load_as, **kw))


def test_the_card_names_hub_ids_in_its_metadata_and_local_files_only_by_name(tmp_path):
    base = tmp_path / "models--acme--tiny-gpt2" / "snapshots" / SHA
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: mit\n---\n")
    card = card_of({"config": {"finetune": {"init_from": f"hf:{REPO}@{SHA}"},
                               "model": {"block_size": 64},
                               "train": {"batch_size": 4, "grad_accum": 2, "lr": 5e-5}},
                    "datasets": ("hf:roneneldan/TinyStories", "wikitext-2",
                                 str(tmp_path / "secret" / "notes.txt")),
                    "best_val_loss": 2.0, "checkpoint_val_loss": 2.5, "tokens_per_step": 512,
                    "base_folder": base, "gguf": "m-q8_0.gguf"}, REPO, on_hub=True)
    d = card.data
    assert (d.base_model, d.library_name, d.pipeline_tag, d.license) == \
        (REPO, "transformers", "text-generation", "mit")
    assert d.datasets == ["roneneldan/TinyStories", "Salesforce/wikitext"]
    assert "llm-trainer" in d.tags and "gguf" in d.tags
    body = card.text
    assert f"at commit `{SHA}`" in body and "`notes.txt`" in body and "secret" not in body
    assert "| best | 2.0000 | 7.39 |" in body and "| this checkpoint (step-00000010) | 2.5000" \
        in body
    assert "about 5,120" in body  # 10 steps x 512 tokens
    assert f'AutoModelForCausalLM.from_pretrained("{REPO}")' in body
    assert f"llama-cli --hf-repo {REPO} --hf-file m-q8_0.gguf -c 64" in body


def test_a_local_base_folder_is_named_by_its_name_only(tmp_path):
    card = card_of({"config": {"finetune": {"init_from": f"hf:{tmp_path}/private/gpt2"}}})
    assert card.data.base_model is None
    assert "Fine-tuned from `gpt2`" in card.text and str(tmp_path) not in card.text


def test_a_model_trained_from_scratch_has_no_base_model():
    card = card_of({"datasets": ("builtin:python-docs",)})
    assert card.data.base_model is None and card.data.datasets is None
    assert "Trained from scratch" in card.text and "No validation loss" in card.text


# --------------------------------------------------------------------------- push


def test_push_offline_is_refused_at_once_before_anything_is_exported(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert main(["models", "push", "some-model", REPO]) == 1
    assert time.monotonic() - start < 3
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: the Hugging Face Hub is unreachable (HF_HUB_OFFLINE, or no " \
                     "network): nothing was pushed"


def test_push_without_a_token_says_how_to_log_in(tmp_path, online, monkeypatch, capsys):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert main(["models", "push", "some-model", REPO]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: no Hugging Face token: nothing was pushed",
                   "hint: set HF_TOKEN, or log in once with `hf auth login`"]


def test_push_refuses_a_repository_id_the_hub_would_not_take(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    assert main(["models", "push", "m", "not a repo"]) == 2
    assert "is not a Hugging Face repository id" in capsys.readouterr().err


@pytest.mark.slow
def test_a_hub_model_fine_tunes_exports_with_its_card_and_pushes(tmp_path, hub, online,
                                                                 monkeypatch, capsys):
    """The whole way: hf:OWNER/NAME (a real GPT-2 folder on the fake Hub) trained two steps;
    its run, model and checkpoint records name the commit; the export's card names the base
    model and its license; push sends that folder with the card, and never shows the
    token."""
    from tests.helpers import make_hf_gpt2

    shutil.rmtree(hub.folder)
    make_hf_gpt2(hub.folder, corpus_text(5000))
    (hub.folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(20_000))
    monkeypatch.setenv("LLM_TRAINER_HOME", str(home))
    monkeypatch.chdir(home)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_shown")
    assert main(["train", "--init-from", f"hf:{REPO}", "--name", "ft", "--dataset",
                 "corpus.txt", "--preset", "tiny", "--max-steps", "2", "--batch-size", "2",
                 "--seq-len", "16", "--set", "train.eval_interval=2", "--foreground",
                 "--sample", "0"]) == 0
    pinned = f"hf:{REPO}@{SHA}"
    model = json.loads((home / "checkpoints" / "ft" / "model.json").read_text())
    assert model["config"]["finetune"]["init_from"] == pinned
    snap = str(hub.cache / "models--acme--tiny-gpt2" / "snapshots" / SHA)
    assert model["lineage"][0]["from_checkpoint"] == snap
    run = json.loads((home / "runs" / model["runs"][0] / "meta.json").read_text())
    assert run["config"]["finetune"]["init_from"] == pinned
    step = home / "checkpoints" / "ft" / "step-00000002"
    assert json.loads((step / "config.json").read_text())["config"]["finetune"][
        "init_from"] == pinned

    out = tmp_path / "export"
    assert main(["models", "export", "ft", "--out", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert (card.data.base_model, card.data.license) == (REPO, "apache-2.0")
    assert "corpus.txt" in card.text and str(home) not in card.text
    transformers = pytest.importorskip("transformers")
    transformers.AutoModelForCausalLM.from_pretrained(str(out))  # the card changes nothing

    capsys.readouterr()
    assert main(["models", "push", "ft", "me/ft", "--private", "--revision", "exp",
                 "--gguf", "f16"]) == 0
    said = capsys.readouterr()
    assert hub.pushed["repo_id"] == hub.pushed["upload_repo"] == "me/ft"
    assert (hub.pushed["private"], hub.pushed["branch"], hub.pushed["revision"]) == \
        (True, "exp", "exp")
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json",
            "ft-f16.gguf"} <= set(hub.pushed["files"])
    pushed_card = ModelCard(hub.pushed["card"])
    assert pushed_card.data.base_model == REPO
    assert 'from_pretrained("me/ft")' in pushed_card.text
    assert "llama-cli --hf-repo me/ft --hf-file ft-f16.gguf -c 16" in pushed_card.text
    assert "hf_secret_never_shown" not in said.out + said.err
    assert "pushed ft (step-00000002) to me/ft (branch exp)" in said.out


def test_data_inspect_reads_with_a_hub_models_tokenizer(tmp_path, hub, online, monkeypatch,
                                                        capsys):
    """`data inspect --init-from hf:OWNER/NAME` takes the same snapshot train would."""
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    (tmp_path / "c.txt").write_text(corpus_text(3000))
    assert main(["data", "inspect", str(tmp_path / "c.txt"), "--init-from", f"hf:{REPO}"]) == 0
    assert [d["revision"] for d in hub.downloads] == [SHA]  # no check: the tokenizer only
    assert "tokens" in capsys.readouterr().out
