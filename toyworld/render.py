"""Rendering scenes to pixels with exact per-pixel object masks (numpy only).

Shapes are drawn crisp (no anti-aliasing) so that masks are exact. A style paints a
"shade" of the object's colour on a fixed pixel pattern: stripes are horizontal bands of
3 px every 6 px, dots are 3x3 px squares every 6 px. The shade moves the colour half-way
towards white on a black background and towards black otherwise, so that it stays far from
the background. The background's pattern paints its tile's blocks in the background's own
pattern tone (a gray level: lighter than black and gray backgrounds, darker than white),
repeated on the 8 px grid from the canvas corner; objects cover it. Every tone is more than 60
RGB units from every object colour and style shade, so that the judge never takes the pattern for
an object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffdict.toyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    PATTERN_BLOCKS,
    PATTERN_TILE,
    Scene,
    SceneObject,
    pattern_codes,
)

STYLE_PERIOD = 6
SHADE_MIX = 0.5
# The pattern's gray level per background: each background's two tones span a range of gray levels that
# no other background's range overlaps (0-64, 128-176, 208-255), so that even a blurred pattern, whose
# pixels mix the two, tells its background apart.
PATTERN_TONES = {"black": 64.0, "gray": 176.0, "white": 208.0}


@dataclass(frozen=True)
class RenderedScene:
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (n_objects, H, W) bool, one per scene object, in scene order

    @property
    def instance_map(self) -> np.ndarray:
        """(H, W) int: 0 = background, i + 1 = scene.objects[i]."""
        out = np.zeros(self.masks.shape[1:], dtype=np.int64)
        for i, mask in enumerate(self.masks):
            out[mask] = i + 1
        return out


def shade_of(colour: tuple[int, int, int] | np.ndarray, background: str) -> np.ndarray:
    """The style's second tone for `colour` on `background`, float RGB in 0..255."""
    target = 255.0 if background == "black" else 0.0
    return (1 - SHADE_MIX) * np.asarray(colour, dtype=np.float64) + SHADE_MIX * target


def pattern_tone(background: str) -> np.ndarray:
    """The background pattern's tone on `background`, float RGB in 0..255."""
    return np.full(3, PATTERN_TONES[background], dtype=np.float64)


def pattern_mask(pattern: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool: where the background pattern paints its tone (the tile repeated from (0, 0))."""
    block = PATTERN_TILE // PATTERN_BLOCKS
    tile = np.kron(pattern_codes()[pattern], np.ones((block, block), dtype=bool))  # (8, 8)
    reps = -(-size // PATTERN_TILE)
    return np.tile(tile, (reps, reps))[:size, :size]


def shape_mask(shape: str, cx: float, cy: float, half_x: float, half_y: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool mask of `shape` filling the box centred at (cx, cy).

    The box spans [cx - half_x, cx + half_x) horizontally (pixel edges), likewise in y.
    The triangle points up, with its base on the bottom edge of the box.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    return inside_shape(shape, (xs - cx) / max(half_x, 1e-6), (ys - cy) / max(half_y, 1e-6))


def inside_shape(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Whether points at box-normalised offsets (dx, dy) from the box centre (the box is
    [-1, 1] in both) lie inside `shape`; any array shape."""
    inside_box = (np.abs(dx) <= 1) & (np.abs(dy) <= 1)
    if shape == "square":
        return inside_box
    if shape == "circle":
        return dx * dx + dy * dy <= 1
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1
    if shape == "triangle":
        # Width grows linearly from 0 at the top edge (dy = -1) to full at the bottom (dy = 1).
        return inside_box & (np.abs(dx) <= (dy + 1) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: SceneObject, size: int = IMAGE_SIZE) -> np.ndarray:
    return shape_mask(obj.shape, obj.cx, obj.cy, obj.half, obj.half, size)


def style_pattern(style: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool: where the style paints the shade."""
    ys, xs = np.mgrid[0:size, 0:size]
    half = STYLE_PERIOD // 2
    if style == "flat":
        return np.zeros((size, size), dtype=bool)
    if style == "striped":
        return (ys % STYLE_PERIOD) >= half
    if style == "dotted":
        return ((ys % STYLE_PERIOD) >= half) & ((xs % STYLE_PERIOD) >= half)
    raise ValueError(f"unknown style {style!r}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> RenderedScene:
    """Draw `scene`; returns the image and one exact mask per object."""
    image = np.empty((size, size, 3), dtype=np.float64)
    image[:] = BACKGROUNDS[scene.background]
    image[pattern_mask(scene.pattern, size)] = pattern_tone(scene.background)
    pattern = style_pattern(scene.style, size)
    masks = np.stack([object_mask(obj, size) for obj in scene.objects])
    for obj, mask in zip(scene.objects, masks):
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float64)
        image[mask] = colour
        image[mask & pattern] = shade_of(colour, scene.background)
    return RenderedScene(scene=scene, image=np.rint(image).astype(np.uint8), masks=masks)
