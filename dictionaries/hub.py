"""Dictionaries on the Hugging Face Hub: load one by repo id, push a trained one with a model card.

A pushed dictionary is the saved folder itself (config.json + weights.safetensors, never the
optimiser state) plus a README.md model card, at the repo root or in a subfolder, so that

    dictionaries.load("owner/repo", subfolder="down.2.1-k10")

reads it back through the ordinary `huggingface_hub` cache (HF_HUB_CACHE, HF_HUB_OFFLINE and
tokens work as for any model).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from diffdict.dictionaries.base import CONFIG_FILE, WEIGHTS_FILE
from diffdict.dictionaries.errors import MissingFileError

# upload(folder, repo_id, path_in_repo, private, commit_message) -> a URL or anything printable.
Uploader = Callable[..., Any]


def is_hub_id(source: str | Path) -> bool:
    """'owner/name' that is not a local path (an existing folder always wins)."""
    text = str(source)
    parts = text.split("/")
    return (not Path(text).exists() and len(parts) == 2 and all(parts)
            and not text.startswith((".", "~")) and not any(p in (".", "..") for p in parts))


def download(repo_id: str, subfolder: str | None = None, revision: str | None = None,
             cache_dir: str | Path | None = None, token: str | bool | None = None) -> Path:
    """The local folder of a dictionary on the Hub (downloaded into the Hub cache if needed)."""
    from huggingface_hub import snapshot_download

    sub = subfolder.strip("/") if subfolder else ""
    patterns = [f"{sub}/{CONFIG_FILE}", f"{sub}/{WEIGHTS_FILE}"] if sub else [CONFIG_FILE, WEIGHTS_FILE]
    root = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                  allow_patterns=patterns, library_name="diffdict"))
    folder = root / sub if sub else root
    if not (folder / CONFIG_FILE).is_file():
        where = f"subfolder {sub!r} of " if sub else ""
        found = sorted(str(p.parent.relative_to(root)) for p in root.rglob(CONFIG_FILE))
        hint = f"; dictionaries in this repo: {', '.join(found)} (pass subfolder=...)" if found else ""
        raise MissingFileError(f"no saved dictionary ({CONFIG_FILE}) in {where}Hub repo {repo_id!r}{hint}")
    return folder


def model_card(folder: str | Path, repo_id: str = "OWNER/REPO", subfolder: str | None = None) -> str:
    """A README.md for a trained dictionary: what it is, where it was trained, how well it does.

    Reads the dictionary's config.json and, when it sits in a run folder (RUN/fits/GROUP/NAME),
    the group's held-out metrics and the activation store's model id."""
    folder = Path(folder)
    document = json.loads((folder / CONFIG_FILE).read_text())
    config, meta = document.get("config", {}), document.get("meta", {})
    architecture = document.get("architecture", "?")
    name = meta.get("name", folder.name)
    n = config.get("n", config.get("max_size"))
    k = config.get("k", config.get("L"))
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
        ("dead fraction", f"{metrics['dead_fraction']:.1%}" if metrics.get("dead_fraction") is not None else "not evaluated"),
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
- {architecture.replace('_', '-')}
---

# {name}: {architecture} on {model or 'a diffusion model'} {hook}

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
code = dictionary.encode(x)          # x: (N, {config.get('d')}) activations of {hook}
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

    frame = pl.read_parquet(path).filter(pl.col("name") == name)
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
    return json.loads(store.read_text()).get("model")


def push(folder: str | Path, repo_id: str, subfolder: str | None = None, private: bool = False,
         commit_message: str | None = None, upload: Uploader | None = None) -> Any:
    """Upload a trained dictionary (config.json, weights.safetensors, README.md model card).

    upload: the function that sends the staged folder (default: `huggingface_hub` create_repo +
    upload_folder); called as upload(folder=, repo_id=, path_in_repo=, private=, commit_message=).
    """
    from diffdict.dictionaries.base import load

    folder = Path(folder)
    dictionary = load(folder)  # refuses anything that is not a complete, loadable dictionary
    message = commit_message or f"diffdict: {dictionary.architecture} {dictionary.meta.get('name', folder.name)}"
    with tempfile.TemporaryDirectory(prefix="diffdict-push-") as staging:
        stage = Path(staging)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(folder / name, stage / name)
        (stage / "README.md").write_text(model_card(folder, repo_id, subfolder))
        return (upload or _hub_upload)(folder=stage, repo_id=repo_id, path_in_repo=subfolder or None,
                                       private=private, commit_message=message)


def _hub_upload(folder: Path, repo_id: str, path_in_repo: str | None, private: bool, commit_message: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(library_name="diffdict")
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, path_in_repo=path_in_repo,
                             commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
