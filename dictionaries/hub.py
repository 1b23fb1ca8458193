"""Dictionaries on the Hugging Face Hub: load one by repo id, push a trained one with a model card.

A pushed dictionary is the saved folder itself (config.json + weights.safetensors, never the
optimiser state) plus a README.md model card, at the repo root or in a subfolder, so that

    dictionaries.load("owner/repo", subfolder="down.2.1-k10")

reads it back through the ordinary `huggingface_hub` cache (HF_HUB_CACHE, HF_HUB_OFFLINE and
tokens work as for any model).
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from diffdict.dictionaries.base import CONFIG_FILE, WEIGHTS_FILE
from diffdict.dictionaries.errors import HubAccessError, InputError, MissingFileError
from diffdict.dictionaries.guarded_read import metrics_fix, read_json, read_parquet, store_settings_fix

# upload(folder, repo_id, path_in_repo, private, commit_message) -> a URL or anything printable.
Uploader = Callable[..., Any]
PROBE_TIMEOUT_S = 10.0  # the reachability probe before a push: a dead network fails in seconds, not retries


def is_hub_id(source: str | Path) -> bool:
    """'owner/name' that is not a local path (an existing folder always wins)."""
    text = str(source)
    parts = text.split("/")
    return (
        not Path(text).exists()
        and len(parts) == 2
        and all(parts)
        and not text.startswith((".", "~"))
        and not any(p in (".", "..") for p in parts)
    )


def check_subfolder(subfolder: str | None) -> str:
    """`subfolder` as a relative path that stays inside the repo or folder it is joined to ("" for none).

    It is joined to a local path (the Hub snapshot, or a local source folder), so an absolute path or a '..'
    would load whatever lies outside: refused, with the reason."""
    if not subfolder:
        return ""
    text = str(subfolder)
    windows = PureWindowsPath(text)  # "C:\\x" and "\\\\server\\x" are absolute on Windows
    if PurePosixPath(text).is_absolute() or windows.drive or windows.root:
        raise InputError(f"subfolder {text!r} is an absolute path; give a folder inside the repo, e.g. 'down.2.1-k10'")
    parts = [part for part in text.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputError(f"subfolder {text!r} climbs out with '..'; give a folder inside the repo, e.g. 'down.2.1-k10'")
    return "/".join(parts)


def join_subfolder(root: Path, subfolder: str | None) -> Path:
    """root / subfolder, checked (check_subfolder), and only if it resolves inside root: a symlink planted in a
    snapshot of the Hub cache could still lead out."""
    sub = check_subfolder(subfolder)
    folder = root / sub if sub else root
    if not folder.resolve().is_relative_to(root.resolve()):
        raise InputError(
            f"subfolder {sub!r} resolves to {folder.resolve()}, outside {root}; refusing to load from there"
        )
    return folder


def download(
    repo_id: str,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
) -> Path:
    """The local folder of a dictionary on the Hub (downloaded into the Hub cache if needed)."""
    from huggingface_hub import snapshot_download

    sub = check_subfolder(subfolder)  # before any download: nothing is fetched for a hostile path
    patterns = [f"{sub}/{CONFIG_FILE}", f"{sub}/{WEIGHTS_FILE}"] if sub else [CONFIG_FILE, WEIGHTS_FILE]
    root = Path(
        snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            allow_patterns=patterns,
            library_name="diffdict",
        )
    )
    folder = join_subfolder(root, sub)
    if not (folder / CONFIG_FILE).is_file():
        where = f"subfolder {sub!r} of " if sub else ""
        found = sorted(str(p.parent.relative_to(root)) for p in root.rglob(CONFIG_FILE))
        hint = f"; dictionaries in this repo: {', '.join(found)} (pass subfolder=...)" if found else ""
        raise MissingFileError(f"no saved dictionary ({CONFIG_FILE}) in {where}Hub repo {repo_id!r}{hint}")
    return folder


def _size_keys(architecture: str) -> tuple[str, str]:
    """The config keys that hold an architecture's (atoms, atoms per code): its class's `size_keys`; ("n", "k")
    for an architecture not registered in this process (a plug-in the card's writer did not import)."""
    from diffdict.dictionaries.registry import architecture_class

    try:
        return tuple(architecture_class(architecture).size_keys)
    except InputError:
        return ("n", "k")


def model_card(folder: str | Path, repo_id: str = "OWNER/REPO", subfolder: str | None = None) -> str:
    """A README.md for a trained dictionary: what it is, where it was trained, how well it does.

    Reads the dictionary's config.json and, when it sits in a run folder (RUN/fits/GROUP/NAME),
    the group's held-out metrics and the activation store's model id."""
    folder = Path(folder)
    document = read_json(
        folder / CONFIG_FILE,
        "a dictionary's config.json",
        f"to retrain the dictionary delete {folder} and run `diffdict train CONFIG`",
    )
    config, meta = document.get("config", {}), document.get("meta", {})
    architecture = document.get("architecture", "?")
    name = meta.get("name", folder.name)
    n_key, k_key = _size_keys(architecture)
    n, k = config.get(n_key, "unknown"), config.get(k_key, "unknown")
    metrics = _held_out_metrics(folder, name)
    model = _model_id(folder)
    facts = [
        ("architecture", architecture),
        ("model", model or "unknown"),
        ("hook", meta.get("hook", "unknown")),
        ("branch", meta.get("branch", "-")),
        ("d (channels)", config.get("d")),
        ("n (atoms)", n),
        ("k (active per token)", k),
        ("training tokens", _count(metrics.get("train_tokens")) if metrics.get("train_tokens") else "unknown"),
        ("training steps", meta.get("train_steps", "unknown")),
        ("held-out tokens", _count(metrics.get("tokens")) if metrics.get("tokens") else "not evaluated"),
        ("held-out FVU", _number(metrics.get("fvu"))),
        ("held-out L0", _number(metrics.get("l0"), 1)),
        (
            "dead fraction",
            f"{metrics['dead_fraction']:.1%}" if metrics.get("dead_fraction") is not None else "not evaluated",
        ),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in facts)
    hook = meta.get("hook", "")
    load_args = repr(repo_id) + (f", subfolder={subfolder!r}" if subfolder else "")
    return f"""---
library_name: diffdict
tags:
- diffdict
- sparse-autoencoder
- dictionary-learning
- {architecture.replace("_", "-")}
---

# {name}: {architecture} on {model or "a diffusion model"} {hook}

A sparse dictionary trained with diffdict on the activations of the denoiser's `{hook}`
hook point. Each token (one spatial position of one denoiser call) is
encoded as at most k of n atoms.

| | |
|---|---|
{table}

FVU is the fraction of variance left unexplained on held-out prompts (0 is perfect); L0 the
mean number of active atoms per token; dead atoms never fired on the held-out tokens.

## Use

```python
from diffdict import dictionaries

dictionary = dictionaries.load({load_args})
code = dictionary.encode(x)          # x: (N, {config.get("d")}) activations of {hook}
x_hat = dictionary.decode(code)
```

## Configuration

```json
{json.dumps(document.get("config", {}), indent=2, sort_keys=True)}
```
"""


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _number(value: Any, digits: int = 4) -> str:
    return "not evaluated" if value is None else f"{float(value):.{digits}f}"


def _held_out_metrics(folder: Path, name: str) -> dict[str, Any]:
    """The last held-out row of the fit group's metrics.parquet, with the training tokens seen."""
    path = folder.parent / "metrics.parquet"
    if not path.is_file():
        return {}
    import polars as pl

    frame = read_parquet(path, "a fit's metrics table", metrics_fix(path), columns=("name", "kind")).filter(
        pl.col("name") == name
    )
    result: dict[str, Any] = {}
    evals = frame.filter(pl.col("kind") == "eval")
    if evals.height:
        result.update(evals.row(-1, named=True))
    train = frame.filter(pl.col("kind") == "train")
    if train.height and "tokens" in train.columns:
        result["train_tokens"] = train["tokens"].max()  # cumulative per step
    return result


def _model_id(folder: Path) -> str | None:
    """The model id of the store a run-folder dictionary was trained on (RUN/stores/MODEL/store.json)."""
    group, run = folder.parent, folder.parent.parent.parent
    if folder.parent.parent.name != "fits":
        return None
    model = group.name.rsplit("-", 2)[0]  # GROUP = MODEL-TOKENS-BATCH
    store = run / "stores" / model / "store.json"
    if not store.is_file():
        return None
    return read_json(store, "a store's settings (store.json)", store_settings_fix(store)).get("model")


def check_hub_access() -> None:
    """That a push can work from here, checked before anything is staged or sent.

    Left to huggingface_hub, a push without a token or network fails inside the upload with a network or
    offline-mode traceback that never mentions the token. Checked in order: offline mode, a token, the Hub
    answering (one bounded request to whoami, which also proves the token valid)."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import build_hf_headers, get_session

    if constants.HF_HUB_OFFLINE:
        raise HubAccessError(
            "HF_HUB_OFFLINE is set, so nothing can be uploaded; unset HF_HUB_OFFLINE (and "
            "TRANSFORMERS_OFFLINE) on a machine with network access and run the same command again"
        )
    token = get_token()
    if not token:
        raise HubAccessError(
            "no Hugging Face token found; log in with `hf auth login` (or set HF_TOKEN to a token "
            "with write access, from https://huggingface.co/settings/tokens) and run the same "
            "command again"
        )
    url = f"{constants.ENDPOINT}/api/whoami-v2"
    try:
        response = get_session().get(
            url, headers=build_hf_headers(token=token, library_name="diffdict"), timeout=PROBE_TIMEOUT_S
        )
    except network_errors() as error:
        raise HubAccessError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(error).__name__}: "
            f"{error}); check the network (or HF_ENDPOINT and proxy settings) and run the same "
            f"command again; nothing was uploaded"
        ) from None
    if response.status_code in (401, 403):
        raise HubAccessError(
            f"the Hugging Face Hub refused the token ({response.status_code}); it may be expired or "
            f"revoked: log in again with `hf auth login` (HF_TOKEN, when set, takes precedence) "
            f"and run the same command again"
        )
    if response.status_code >= 400:
        raise HubAccessError(
            f"the Hugging Face Hub at {constants.ENDPOINT} answered {response.status_code}; try "
            f"again later; nothing was uploaded"
        )


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP library this huggingface_hub uses (requests, httpx or httpx2, by version);
    OSError covers refused connections and OfflineModeIsEnabled."""
    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def push(
    folder: str | Path,
    repo_id: str,
    subfolder: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    upload: Uploader | None = None,
) -> Any:
    """Upload a trained dictionary (config.json, weights.safetensors, README.md model card).

    upload: the function that sends the staged folder (default: `huggingface_hub` create_repo +
    upload_folder, after check_hub_access); called as upload(folder=, repo_id=, path_in_repo=, private=,
    commit_message=).
    """
    from diffdict.dictionaries.base import load

    folder = Path(folder)
    sub = check_subfolder(subfolder) or None  # the card's load line names it; the Hub takes the same path
    dictionary = load(folder)  # refuses anything that is not a complete, loadable dictionary
    if upload is None:
        check_hub_access()  # token and network, before the staging and the card
    message = commit_message or f"diffdict: {dictionary.architecture} {dictionary.meta.get('name', folder.name)}"
    with tempfile.TemporaryDirectory(prefix="diffdict-push-") as staging:
        stage = Path(staging)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(folder / name, stage / name)
        (stage / "README.md").write_text(model_card(folder, repo_id, sub))
        return (upload or _hub_upload)(
            folder=stage, repo_id=repo_id, path_in_repo=sub, private=private, commit_message=message
        )


def _hub_upload(folder: Path, repo_id: str, path_in_repo: str | None, private: bool, commit_message: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(library_name="diffdict")
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, path_in_repo=path_in_repo, commit_message=commit_message
    )
    return str(getattr(info, "commit_url", info))
