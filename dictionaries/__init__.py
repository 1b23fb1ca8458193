"""Dictionary learners behind one API (`dictionaries.base`), their activation store and training.

    from diffdict import dictionaries
    sae = dictionaries.load("runs/quickstart/fits/turbo-60000-512/turbo-sae")  # a local folder
    sae = dictionaries.load("owner/repo", subfolder="turbo-sae")               # or the Hugging Face Hub

Kept import-free: `dictionaries.distributed` and friends are imported without torch-heavy
learners, and `diffdict --help` imports nothing from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(
    source: str | Path,
    subfolder: str | None = None,
    revision: str | None = None,
    training_state: bool = False,
    device: Any = None,
    cache_dir: str | Path | None = None,
) -> Any:
    """Load a saved dictionary from a local folder or a Hugging Face Hub repo ('owner/repo').

    subfolder: the dictionary's folder inside the source (a repo may hold several): a relative path, never
      absolute or with '..' (InputError); in a Hub snapshot it must also resolve inside the snapshot.
    revision, cache_dir: as in huggingface_hub (a branch, tag or commit; the Hub cache).
    """
    from diffdict.dictionaries.base import load as load_folder
    from diffdict.dictionaries.hub import check_subfolder, download, is_hub_id

    if is_hub_id(source):
        folder = download(str(source), subfolder=subfolder, revision=revision, cache_dir=cache_dir)
    else:  # the Hub's rule for the path itself; a symlink in a local folder is the user's own to follow
        sub = check_subfolder(subfolder)
        folder = Path(source) / sub if sub else Path(source)
    return load_folder(folder, training_state=training_state, device=device)
