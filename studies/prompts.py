"""The prompts of a study: captions of toy-world scenes (with their ground truth) or plain text."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PromptsSection, resolve_relative


@dataclass(frozen=True)
class Prompt:
    """A prompt, and its toy-world scene when it has one (the ground truth for judging)."""

    id: int
    text: str
    scene: Any = None  # toyworld.scenes.Scene or None


def study_prompts(section: PromptsSection, config_path: Path | None = None) -> list[Prompt]:
    """All prompts of a study, in a fixed order (train/eval are split later, by prompt id)."""
    if section.source == "toyworld":
        from toyworld.scenes import train_scene

        scenes = [train_scene(i) for i in range(section.count)]
        return [Prompt(i, s.caption, s) for i, s in enumerate(scenes)]
    if section.source == "list":
        texts = section.list[: section.count]
    else:
        file = resolve_relative(section.file or "", config_path)
        texts = [line.strip() for line in file.read_text().splitlines() if line.strip()][: section.count]
    return [Prompt(i, text) for i, text in enumerate(texts)]


def held_out_scenes(n: int) -> list[Prompt]:
    """Toy-world evaluation scenes no training caption uses (seeds 0..n-1 of the eval stream)."""
    from toyworld.scenes import eval_scenes

    return [Prompt(i, s.caption, s) for i, s in enumerate(eval_scenes(max(n, 1))[:n])]
