"""How alike two generations are: judge agreement on the toy world, pixels and CLIP elsewhere."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pixel_similarity(a: Image.Image, b: Image.Image) -> float:
    """1 - mean absolute pixel difference, in [0, 1]."""
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(1.0 - np.abs(x - y).mean() / 255.0)


def judged_attributes(image: Image.Image) -> dict[str, str]:
    """The judge's reading as flat attribute -> value (objects ordered left to right, top to bottom)."""
    from diffdict.toyworld.judge import judge

    reading = judge(image)
    flat = {"background": reading.background, "style": reading.style, "count": str(len(reading.objects))}
    for i, obj in enumerate(sorted(reading.objects, key=lambda o: (o.cx, o.cy))):
        for name in ("colour", "shape", "size", "position"):
            flat[f"object{i}.{name}"] = getattr(obj, name)
    return flat


def judge_agreement(a: Image.Image, b: Image.Image) -> float:
    """Share of the judge's attributes (of either image) that are equal in both images."""
    first, second = judged_attributes(a), judged_attributes(b)
    keys = set(first) | set(second)
    return sum(first.get(k) == second.get(k) for k in keys) / len(keys)
