"""The small checks a config is validated with, shared by config.py and each study's declaration
(studies/kinds/). Each raises ConfigError as `SOURCE: KEY: what is wrong and what is allowed`.

Torch-free: config parsing and `diffdict --help` import it.
"""

from __future__ import annotations

import difflib
from typing import Any

from .errors import ConfigError


def fail(source: str, key: str, message: str) -> ConfigError:
    """The error to raise: `SOURCE: KEY: message` (just `SOURCE: message` without a key)."""
    where = f"{source}: {key}: " if key else f"{source}: "
    return ConfigError(where + message)


def did_you_mean(value: Any, options: Any) -> str:
    """ "; did you mean 'x'?" for the option closest to a misspelt value, or "" when none is close."""
    close = difflib.get_close_matches(str(value), [str(option) for option in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(source: str, key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise fail(
            source,
            key,
            f"{value!r} is not allowed{did_you_mean(value, allowed)} Allowed: {', '.join(map(str, allowed))}",
        )


def positive(source: str, key: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise fail(source, key, f"must be > 0, got {value}")


def check_windows(source: str, key: str, windows: dict[str, list[float]]) -> None:
    """name -> [low, high] time windows in normalised t (1 = pure noise)."""
    if not windows:
        raise fail(source, key, "is empty; give at least one window, e.g. { early = [0.6, 1.0] }")
    for name, window in windows.items():
        if len(window) != 2 or not 0.0 <= window[0] <= window[1] <= 1.0:
            raise fail(
                source,
                f"{key}.{name}",
                f"{window} must be [low, high] with 0 <= low <= high <= 1 (t = 1 is pure noise)",
            )


def check_toy_world_study(config: Any, study: Any, source: str, key: str) -> None:
    """A study scored against each toy scene's ground truth: it names model entries (checked against the
    config's by name elsewhere), edits and scores a positive number of prompts, and needs toy-world prompts."""
    if not study.models:
        raise fail(source, f"{key}.models", "is empty; name the model entries to study")
    positive(source, f"{key}.prompts", study.prompts)
    positive(source, f"{key}.selection_prompts", study.selection_prompts)
    require_toy_world(config, source, key, "it is scored against each scene's ground truth")


def require_toy_world(config: Any, source: str, key: str, why: str) -> None:
    if not config.has_ground_truth:
        raise fail(source, key, f"needs toy-world prompts (prompts.source = 'toyworld'): {why}")
