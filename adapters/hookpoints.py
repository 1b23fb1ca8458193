"""Hook points: short, uniform names for the blocks a study reads from and writes into."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import AdapterInputError


@dataclass(frozen=True)
class HookPoint:
    """One addressable block output of a denoiser.

    name: what a user types (`down.2.1`, `mid.0`, `double.18`, `double.18.txt`).
    module_path: the block's path in the denoiser (`down_blocks.2.attentions.1`).
    d: channels of the map.
    stride: image pixels per grid cell along each side (image streams), None for text.
    text_tokens: sequence length of a text stream, None for image streams.
    """

    name: str
    module_path: str
    d: int
    stride: int | None = None
    text_tokens: int | None = None

    @property
    def stream(self) -> str:
        return "text" if self.stride is None else "image"

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the map at an image size of height x width pixels."""
        if self.stride is None:
            return (1, int(self.text_tokens or 0))
        if height % self.stride or width % self.stride:
            raise AdapterInputError(
                f"hook {self.name!r}: image size {height}x{width} px is not a multiple of its "
                f"stride {self.stride} px; use a size divisible by {self.stride}"
            )
        return (height // self.stride, width // self.stride)


def unknown_hook_message(name: str, valid: list[str], model_id: str) -> str:
    """Error text for a hook name the model does not have: closest matches plus all names."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown hook {name!r} for model {model_id!r}.{hint} Valid hooks: {', '.join(valid)}"
