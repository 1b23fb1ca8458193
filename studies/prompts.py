"""The prompts of a study: captions of toy-world scenes (with their ground truth) or plain text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PromptsSection, resolve_relative
from .prompt_sources import is_local_table, read_table


@dataclass(frozen=True)
class Prompt:
    """A prompt, and its toy-world scene when it has one (the ground truth for judging)."""

    id: int
    text: str
    scene: Any = None  # toyworld.scenes.Scene or None


def study_prompts(section: PromptsSection, config_path: Path | None = None, cache: Path | None = None) -> list[Prompt]:
    """All prompts of a study, in a fixed order (train/eval are split later, by prompt id).

    cache: the run folder, where captions read from a Hub dataset are kept (see prompt_sources).
    """
    if section.source == "toyworld":
        from diffdict.toyworld.scenes import train_scene

        scenes = [train_scene(i) for i in range(section.count)]
        return [Prompt(i, s.caption, s) for i, s in enumerate(scenes)]
    if section.source == "list":
        texts = section.list[: section.count]
    elif section.source == "dataset":
        from .prompt_sources import dataset_captions

        texts = dataset_captions(section, config_path, cache)
    elif is_local_table(section.file or "", config_path):
        texts = read_table(
            resolve_relative(section.file or "", config_path),
            section.column or "",
            section.count,
            section.shuffle,
            section.shuffle_seed,
        )
    else:
        file = resolve_relative(section.file or "", config_path)
        texts = [line.strip() for line in file.read_text().splitlines() if line.strip()][: section.count]
    return [Prompt(i, text) for i, text in enumerate(texts)]
