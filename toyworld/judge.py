"""The judge: reads any RGB image back into scene attributes, and scores adherence.

Steps: background = the palette colour whose two tones (plain, and its pattern's) explain the
border pixels best; foreground = pixels far from both tones; the pattern = the tile whose
blocks best match the background pixels folded onto the 8 px grid; objects = connected
foreground components (specks dropped); per object the colour is a vote of pixels for the
nearest palette colour or its style shade, the shape is the best IoU against each template
fitted near the object's bounding box, crisp or seen through a blur (as decoded images are),
the size comes from the box side and the position from the nearest anchor. The style is
global: the share of shaded pixels and whether shaded pixels fill whole rows (stripes) or
half of them (dots).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from itertools import permutations
from typing import cast

import numpy as np
from PIL import Image
from scipy import ndimage

from diffdict.toyworld.render import inside_shape, pattern_mask, pattern_tone, shade_of
from diffdict.toyworld.scenes import (
    ANCHORS,
    BACKGROUNDS,
    COLOURS,
    HALF_SIZE,
    PATTERN_BLOCKS,
    PATTERN_TILE,
    SHAPES,
    Scene,
    pattern_codes,
)

FOREGROUND_DISTANCE = 60.0  # RGB distance (0..255 scale) from the background
MIN_OBJECT_PIXELS = 30  # smaller components are noise, not objects
LARGE_SIDE = HALF_SIZE["small"] + HALF_SIZE["large"]  # box side threshold, 19 px
FLAT_MAX_SHADE = 0.1  # share of shaded interior pixels below which the style is flat
STRIPE_MIN_ROW_FILL = 0.75  # stripes fill whole rows; dots fill about half a row
ATTRIBUTES = ("count", "colour", "shape", "size", "position", "background", "pattern", "style")


@dataclass
class JudgedObject:
    colour: str
    shape: str
    size: str
    position: str
    cx: float
    cy: float
    area: int
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # (H, W) bool pixels


@dataclass
class Judgement:
    background: str
    style: str
    objects: list[JudgedObject] = field(default_factory=list)
    pattern: str = ""


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) float64 in 0..255 from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"judge expects an (H, W, 3) RGB image, got shape {array.shape}")
    if array.max() <= 1.0 and np.asarray(image).dtype != np.uint8:
        array = array * 255.0  # floats in [0, 1]
    return array


def _nearest(value: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(value - np.asarray(palette[n], dtype=np.float64)) for n in names]
    return names[int(np.argmin(distances))]


def _judge_background(array: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(background, its measured plain tone, its measured pattern tone) from the border pixels."""
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    costs: dict[str, float] = {}
    for name, colour in BACKGROUNDS.items():  # pixels mixing the two tones (a blur) lie on the segment between
        plain = np.asarray(colour, dtype=np.float64)
        step = pattern_tone(name) - plain
        along = np.clip(((border - plain) @ step) / (step @ step), 0.0, 1.0)
        costs[name] = float(np.linalg.norm(border - (plain + along[:, None] * step), axis=1).sum())
    background = min(costs, key=lambda name: costs[name])
    tones = np.stack([np.asarray(BACKGROUNDS[background], dtype=np.float64), pattern_tone(background)])
    nearest = np.linalg.norm(border[:, None, :] - tones[None], axis=2).argmin(axis=1)
    measured = [np.median(border[nearest == i], axis=0) if (nearest == i).any() else tones[i] for i in range(2)]
    return background, measured[0], measured[1]


def _background_distance(array: np.ndarray, plain: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """(H, W) RGB distance of each pixel to the nearer of the background's two tones."""
    return np.minimum(np.linalg.norm(array - plain, axis=2), np.linalg.norm(array - tone, axis=2))


def _judge_pattern(array: np.ndarray, background: np.ndarray, plain: np.ndarray, tone: np.ndarray) -> str:
    """The pattern whose tile best matches the background pixels folded onto the 8 px grid.

    background: (H, W) bool, the pixels to read (away from objects). Each pixel's tone-ness (0 plain,
    1 pattern tone) is averaged per position in the tile, then per block; the code with the highest
    correlation wins."""
    size = array.shape[0]
    direction = tone - plain
    toneness = ((array - plain) @ direction) / max(float(direction @ direction), 1e-6)
    ys, xs = np.mgrid[0:size, 0:size] * 64 // size  # native 64 px coordinates
    block = PATTERN_TILE // PATTERN_BLOCKS
    cells = (ys % PATTERN_TILE // block) * PATTERN_BLOCKS + (xs % PATTERN_TILE // block)
    sums = np.bincount(cells[background], weights=toneness[background], minlength=PATTERN_BLOCKS**2)
    counts = np.bincount(cells[background], minlength=PATTERN_BLOCKS**2)
    blocks = sums / np.maximum(counts, 1) - 0.5
    names = list(pattern_codes())
    codes = np.stack([pattern_codes()[n].reshape(-1) for n in names]).astype(np.float64) - 0.5
    return names[int(np.argmax(codes @ blocks))]


# Template fitting (see _shape_of): centre shifts and half-side changes in pixels, and the
# blurs (Gaussian sigma in pixels) a template may be seen through.
FIT_CENTRE_SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
FIT_HALF_CHANGES = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
FIT_BLURS = (0.0, 1.25)


def _shape_templates(cx: float, cy: float, half: float, ys: np.ndarray, xs: np.ndarray) -> dict[str, np.ndarray]:
    """Every shape drawn at every nearby placement: (placements, h, w) bool per shape, on the
    pixel centres (ys, xs) of a crop."""
    shifts, changes = np.asarray(FIT_CENTRE_SHIFTS), np.asarray(FIT_HALF_CHANGES)
    centre_x, centre_y, halves = (
        a.reshape(-1, 1, 1)
        for a in np.broadcast_arrays(
            (cx + shifts)[:, None, None], (cy + shifts)[None, :, None], np.maximum(half + changes, 1.0)[None, None, :]
        )
    )
    dx, dy = (xs[None] - centre_x) / halves, (ys[None] - centre_y) / halves
    return {shape: inside_shape(shape, dx, dy) for shape in SHAPES}


@functools.lru_cache(maxsize=64)  # about 1 MB each
def _fitted_templates(cx: float, cy: float, half: float, height: int, width: int) -> tuple[tuple[str, np.ndarray], ...]:
    """(shape, (blurs, placements, h, w) bool) for an object centred at (cx, cy) of a height x width crop (crop
    coordinates), each template crisp and seen through each of FIT_BLURS. The fit depends on the box only through
    these numbers, which take few values (boxes have integer edges, objects two nominal sizes), so the drawn and
    blurred templates are kept: most of a judgement's time went into redrawing them."""
    pixel_ys, pixel_xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    fitted = []
    for shape, templates in _shape_templates(cx, cy, half, pixel_ys, pixel_xs).items():
        seen = [
            templates
            if sigma == 0
            else ndimage.gaussian_filter(templates.astype(np.float32), (0, sigma, sigma), mode="constant") > 0.5
            for sigma in FIT_BLURS
        ]
        stack = np.stack(seen)
        stack.flags.writeable = False
        fitted.append((shape, stack))
    return tuple(fitted)


def _shape_of(mask: np.ndarray, box: tuple[slice, slice]) -> str:
    """The shape whose template best overlaps (IoU) the object's mask.

    A generated object's box is rarely exact: a blurred tip, a halo pixel or a rounded corner
    moves it by a pixel or two, and a crisp square drawn through a blur (as every image from a
    VAE decoder is) comes out with rounded corners. So each template is fitted over nearby
    placements, crisp and blurred (thresholded at half, which keeps straight edges and
    rounds corners), and the best fit decides. On rendered scenes the exact placement still
    wins with IoU 1; the tests check round trips through the shipped VAEs too.
    """
    ys, xs = box
    cx, cy = (xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2
    half = ((xs.stop - xs.start) + (ys.stop - ys.start)) / 4  # objects have square boxes
    margin = 4
    y0, y1 = max(ys.start - margin, 0), min(ys.stop + margin, mask.shape[0])
    x0, x1 = max(xs.start - margin, 0), min(xs.stop + margin, mask.shape[1])
    crop = mask[y0:y1, x0:x1]
    best, best_iou = SHAPES[0], -1.0
    for shape, seen in _fitted_templates(cx - x0, cy - y0, half, y1 - y0, x1 - x0):
        overlap = (seen & crop).sum(axis=(2, 3))
        iou = (overlap / np.maximum(seen.sum(axis=(2, 3)) + crop.sum() - overlap, 1)).max(axis=1)
        for blur_iou in iou:  # crisp first, then blurred: the same order of ties as fitting them one by one
            if blur_iou > best_iou:
                best, best_iou = shape, blur_iou
    return best


def _colour_and_shade(pixels: np.ndarray, background: str) -> tuple[str, np.ndarray]:
    """Vote the object's colour; return it and each pixel's shade-ness in [0, 1]."""
    names = list(COLOURS)
    bases = np.array([COLOURS[n] for n in names], dtype=np.float64)  # (6, 3)
    shades = np.stack([shade_of(c, background) for c in bases])  # (6, 3)
    tones = np.concatenate([bases, shades])  # (12, 3)
    nearest = np.linalg.norm(pixels[:, None, :] - tones[None], axis=2).argmin(axis=1)
    votes = np.bincount(nearest % len(names), minlength=len(names))
    colour = int(votes.argmax())
    base, shade = bases[colour], shades[colour]
    direction = shade - base
    shade_ness = ((pixels - base) @ direction) / (direction @ direction)
    return names[colour], np.clip(shade_ness, 0.0, 1.0)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, count) of the mask's connected components: ndimage.label without an output array (scipy
    leaves it unannotated, and pyright infers the count-only return of a call with one as well)."""
    return cast(tuple[np.ndarray, int], ndimage.label(mask))


def _recut(array: np.ndarray, mask: np.ndarray, expected: np.ndarray, colour: str, background: str) -> np.ndarray:
    """The object re-cut at half its contrast with the background each pixel should show (`expected`,
    (H, W, 3): plain or pattern tone), so that a blurred edge goes back where it was on either tone."""
    tones = np.stack([np.asarray(COLOURS[colour], dtype=np.float64), shade_of(COLOURS[colour], background)])
    contrast = np.linalg.norm(expected[:, :, None, :] - tones[None, None], axis=3).min(axis=2)  # (H, W)
    region = ndimage.binary_dilation(mask, iterations=2)
    recut = region & (np.linalg.norm(array - expected, axis=2) > 0.5 * contrast)
    labels, n = _label(recut)
    if n == 0:
        return mask
    largest = np.bincount(labels[recut]).argmax()
    return cast(np.ndarray, ndimage.binary_fill_holes(labels == largest))  # no output array: returns the filled mask


def _expected_background(pattern: str, plain: np.ndarray, tone: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3): the background every pixel should show, seen through a decoder's slight blur."""
    native = pattern_mask(pattern)[np.ix_(np.arange(size) * 64 // size, np.arange(size) * 64 // size)]
    image = np.where(native[..., None], tone, plain)
    return ndimage.gaussian_filter(image, (0.7 * size / 64, 0.7 * size / 64, 0))


def _judge_style(shaded: np.ndarray, interior: np.ndarray) -> str:
    """shaded, interior: (H, W) bool maps pooled over all objects."""
    n_interior = interior.sum()
    if n_interior == 0 or shaded[interior].mean() < FLAT_MAX_SHADE:
        return "flat"
    # For each shaded pixel: what share of its row's interior pixels is shaded.
    row_interior = interior.sum(axis=1)
    row_shaded = (shaded & interior).sum(axis=1)
    rows = row_shaded > 0
    fill = row_shaded[rows] / row_interior[rows]
    mean_fill = (fill * row_shaded[rows]).sum() / row_shaded[rows].sum()
    return "striped" if mean_fill >= STRIPE_MIN_ROW_FILL else "dotted"


def judge(image: Image.Image | np.ndarray) -> Judgement:
    """Read an RGB image (PIL, or (H, W, 3) uint8 / float in [0, 1]) into attributes."""
    array = _as_array(image)
    size = array.shape[0]
    scale = size / 64.0  # thresholds are tuned for the 64 px world
    background, measured, tone = _judge_background(array)
    # the pattern first, from pixels far from anything that could be an object; then every pixel is
    # compared with the background it should show there
    far = _background_distance(array, measured, tone) > FOREGROUND_DISTANCE
    coarse = np.asarray(ndimage.binary_opening(far, iterations=1), dtype=bool)
    away = ~np.asarray(ndimage.binary_dilation(coarse, iterations=2), dtype=bool)
    pattern = _judge_pattern(array, away if away.any() else ~coarse, measured, tone)
    expected = _expected_background(pattern, measured, tone, size)
    foreground = np.linalg.norm(array - expected, axis=2) > FOREGROUND_DISTANCE
    foreground = ndimage.binary_opening(foreground, iterations=1)  # drop 1-px specks
    labels, _ = _label(foreground)
    objects: list[JudgedObject] = []
    shaded_all = np.zeros(foreground.shape, dtype=bool)
    interior_all = np.zeros(foreground.shape, dtype=bool)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels == index
        area = int(mask.sum())
        if area < MIN_OBJECT_PIXELS * scale * scale:
            continue
        colour, _ = _colour_and_shade(array[mask], background)
        # Re-cut the object at half its own contrast, which puts a blurred edge back where
        # it was; a fixed threshold grows bright objects and shrinks faint ones.
        mask = _recut(array, mask, expected, colour, background)
        colour, shade_ness = _colour_and_shade(array[mask], background)
        box = ndimage.find_objects(mask.astype(np.int64))[0]
        shade_map = np.zeros(mask.shape, dtype=bool)
        shade_map[mask] = shade_ness > 0.5
        interior = ndimage.binary_erosion(mask, iterations=1)
        shaded_all |= shade_map & interior
        interior_all |= interior
        ys, xs = box
        side = max(xs.stop - xs.start, ys.stop - ys.start) / scale
        cx, cy = (xs.start + xs.stop) / 2 / scale, (ys.start + ys.stop) / 2 / scale
        position = min(ANCHORS, key=lambda p: (ANCHORS[p][0] - cx) ** 2 + (ANCHORS[p][1] - cy) ** 2)
        objects.append(
            JudgedObject(
                colour=colour,
                shape=_shape_of(mask, box),
                size="large" if side >= LARGE_SIDE else "small",
                position=position,
                cx=cx,
                cy=cy,
                area=area,
                mask=mask,
            )
        )
    return Judgement(
        background=background, style=_judge_style(shaded_all, interior_all), objects=objects, pattern=pattern
    )


def match_objects(scene: Scene, found: list[JudgedObject]) -> list[JudgedObject | None]:
    """Pair each scene object with a distinct judged object, minimising centre distance."""
    truth = scene.objects
    found = sorted(found, key=lambda o: -o.area)[: len(truth) + 2]
    best: list[JudgedObject | None] = [None] * len(truth)
    best_cost = float("inf")
    slots = found + [None] * len(truth)
    for chosen in permutations(range(len(slots)), len(truth)):
        pairs = [slots[i] for i in chosen]
        cost = sum(1e4 if o is None else (o.cx - t.cx) ** 2 + (o.cy - t.cy) ** 2 for o, t in zip(pairs, truth))
        if cost < best_cost:
            best, best_cost = pairs, cost
    return best


def score(scene: Scene, judgement: Judgement) -> dict[str, list[bool]]:
    """Per attribute, one bool per scored item (objects for per-object attributes)."""
    result: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    result["count"].append(len(judgement.objects) == len(scene.objects))
    result["background"].append(judgement.background == scene.background)
    result["pattern"].append(judgement.pattern == scene.pattern)
    result["style"].append(judgement.style == scene.style)
    for truth, found in zip(scene.objects, match_objects(scene, judgement.objects)):
        for attribute in ("colour", "shape", "size", "position"):
            result[attribute].append(found is not None and getattr(found, attribute) == getattr(truth, attribute))
    return result


def adherence(scenes: list[Scene], images: list) -> dict[str, float]:
    """Share of correct items per attribute over many (scene, image) pairs."""
    return judged_adherence(scenes, [judge(image) for image in images])


def judged_adherence(scenes: list[Scene], judgements: list[Judgement]) -> dict[str, float]:
    """`adherence` of images already judged (one judgement per scene)."""
    totals: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    for scene, judgement in zip(scenes, judgements, strict=True):
        for attribute, values in score(scene, judgement).items():
            totals[attribute].extend(values)
    return {a: float(np.mean(v)) if v else float("nan") for a, v in totals.items()}
