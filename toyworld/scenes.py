"""The toy world's grammar: scenes of one or two coloured shapes on a patterned background,
their captions and labels.

A scene is plain data (no pixels); `toyworld.render` turns it into an image and exact
per-pixel masks. Everything is deterministic from a seed. Two disjoint seed streams exist:
`eval_scenes()` (the held-out captions, seeds 0..N-1) and `train_scene(seed)`, which never
returns a caption that is in the held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 64

SHAPES = ("circle", "square", "triangle", "diamond")
# Saturated colours about 50 degrees of hue apart, so that they stay apart after a VAE.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (240, 210, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 80, 230),
    "purple": (170, 60, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}
SIZES = ("small", "large")
# Half of the object's side in pixels (before jitter): large = 24 px, small = 14 px wide.
HALF_SIZE = {"small": 7, "large": 12}
POSITIONS = ("left", "right", "top", "bottom", "centre")
# Anchor (x, y) of the object's bounding-box centre on a 64 px canvas.
ANCHORS: dict[str, tuple[int, int]] = {
    "left": (14, 32),
    "right": (50, 32),
    "top": (32, 14),
    "bottom": (32, 50),
    "centre": (32, 32),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
# A global style changes the objects' texture, never the layout.
STYLES = ("flat", "striped", "dotted")
# The background's pattern: one of many tiles, repeated over the whole background on the 8 px grid, so
# that every 8x8 hook cell of background shows the same tile wherever it is. With far more patterns
# than a hook has channels, a block can only hold them in superposition: something sparse for a
# dictionary to find, which neither single channels nor random directions can reach.
PATTERN_COUNT = 128
PATTERN_TILE = 8  # pixels: the tile is a 4x4 grid of 2x2-pixel blocks
PATTERN_BLOCKS = 4
PATTERNS = tuple(f"p{i:03d}" for i in range(PATTERN_COUNT))
JITTER = 2  # pixels of random offset around the anchor
MIN_GAP = 3  # pixels between two objects' bounding boxes
TWO_OBJECT_FRACTION = 0.5


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str
    # Exact geometry used by the renderer: bounding-box centre and half side, in pixels.
    cx: int
    cy: int
    half: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive pixel bounds of the object's bounding box."""
        return (self.cx - self.half, self.cy - self.half, self.cx + self.half - 1, self.cy + self.half - 1)

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    style: str
    seed: int
    pattern: str = PATTERNS[0]

    @property
    def caption(self) -> str:
        """Plain English, e.g. 'a large red circle on the left and a small blue square on
        the right, striped, on a black background with pattern p017'."""
        things = " and ".join(obj.phrase() for obj in self.objects)
        return f"{things}, {self.style}, on a {self.background} background with pattern {self.pattern}"

    def labels(self) -> dict:
        """Every attribute as plain data (JSON-ready)."""
        return {
            "caption": self.caption,
            "background": self.background,
            "pattern": self.pattern,
            "style": self.style,
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position, "box": list(o.box)}
                for o in self.objects
            ],
        }


def vocabulary() -> list[str]:
    """Every word a caption can contain (for the project's word tokenizer)."""
    words = {"a", "and", "on", "background", ",", "with", "pattern"}
    words |= set(SHAPES) | set(COLOURS) | set(BACKGROUNDS) | set(SIZES) | set(STYLES) | set(PATTERNS)
    for phrase in POSITION_PHRASES.values():
        words |= set(phrase.split())
    return sorted(words)


def _boxes_apart(a: SceneObject, b: SceneObject) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    gap_x = max(bx0 - ax1, ax0 - bx1) - 1
    gap_y = max(by0 - ay1, ay0 - by1) - 1
    return max(gap_x, gap_y) >= MIN_GAP


def _sample_object(rng: np.random.Generator, position: str) -> SceneObject:
    size = SIZES[rng.integers(len(SIZES))]
    ax, ay = ANCHORS[position]
    jx, jy = rng.integers(-JITTER, JITTER + 1, size=2)
    return SceneObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=tuple(COLOURS)[rng.integers(len(COLOURS))],
        size=size,
        position=position,
        cx=int(ax + jx),
        cy=int(ay + jy),
        half=HALF_SIZE[size],
    )


def sample_scene(seed: int, stream: str = "train") -> Scene:
    """One scene drawn from `seed` in a named stream (independent streams never collide)."""
    if stream not in ("train", "eval"):
        raise ValueError(f"unknown scene stream {stream!r}: use 'train' or 'eval'")
    rng = np.random.default_rng([seed, 0 if stream == "train" else 1])
    background = tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    style = STYLES[rng.integers(len(STYLES))]
    n_objects = 2 if rng.random() < TWO_OBJECT_FRACTION else 1
    while True:  # rejection: two objects at distinct positions whose boxes do not touch
        positions = rng.choice(len(POSITIONS), size=n_objects, replace=False)
        objects = tuple(_sample_object(rng, POSITIONS[p]) for p in sorted(positions))
        if n_objects == 1 or _boxes_apart(*objects):
            break
    # drawn last, from its own stream, so that the rest of a scene is what the same seed gave before
    pattern = PATTERNS[np.random.default_rng([seed, 2 if stream == "train" else 3]).integers(PATTERN_COUNT)]
    return Scene(objects=objects, background=background, style=style, seed=seed, pattern=pattern)


@lru_cache(maxsize=1)
def pattern_codes() -> dict[str, np.ndarray]:
    """pattern -> (4, 4) bool blocks of its tile: seeded codes with 6 of 16 blocks set, any two at least
    4 blocks apart, so that a blurred or partly hidden tile is still read as the right one."""
    rng = np.random.default_rng(20261205)
    codes: list[np.ndarray] = []
    while len(codes) < PATTERN_COUNT:
        code = np.zeros(PATTERN_BLOCKS * PATTERN_BLOCKS, dtype=bool)
        code[rng.choice(code.size, size=6, replace=False)] = True
        if all((code != other).sum() >= 4 for other in codes):
            codes.append(code)
    return {name: code.reshape(PATTERN_BLOCKS, PATTERN_BLOCKS) for name, code in zip(PATTERNS, codes)}


@lru_cache(maxsize=4)
def eval_scenes(n: int = 256) -> tuple[Scene, ...]:
    """The held-out scenes, seeds 0..n-1 of the eval stream, with n distinct captions.

    Scene i is generated with seed i; a draw that repeats an earlier caption is redrawn.
    """
    scenes: list[Scene] = []
    seen: set[str] = set()
    for seed in range(n):
        attempt = 0
        while True:
            scene = sample_scene(seed * 1000 + attempt, "eval")
            if scene.caption not in seen:
                break
            attempt += 1
        seen.add(scene.caption)
        scenes.append(Scene(scene.objects, scene.background, scene.style, seed, scene.pattern))
    return tuple(scenes)


@lru_cache(maxsize=4)
def _held_out_captions(n: int) -> frozenset[str]:
    return frozenset(scene.caption for scene in eval_scenes(n))


def train_scene(seed: int, held_out: int = 256) -> Scene:
    """A training scene whose caption is not one of the first `held_out` eval captions."""
    banned = _held_out_captions(held_out)
    attempt = 0
    while True:
        scene = sample_scene(seed * 1000 + attempt, "train")
        if scene.caption not in banned:
            return Scene(scene.objects, scene.background, scene.style, seed, scene.pattern)
        attempt += 1
