"""Where a toy model's object errors come from: drawing or binding.

Adherence says how often an object's colour, shape or size is right. It does not say why it
is wrong, and the two causes call for different fixes: a model that cannot draw a small
triangle gets single objects wrong too, while a model that draws well but binds attributes
to the wrong object (the attribute-binding failure T2I-CompBench measures) gets single
objects right and, in two-object scenes, gives an object the *other* object's value.

`error_breakdown` sorts every object of the held-out scenes by scene kind and size and
classes each judged value as right, swapped (the other object's value, where the two
objects differ in that attribute), wrong (any other value) or missing (no object found
there). Objects are paired with judged ones by position (`judge.match_objects`), so
position itself is not broken down.
"""

from __future__ import annotations

from collections import Counter

from diffdict.toyworld.judge import Judgement, match_objects
from diffdict.toyworld.scenes import SIZES, Scene

BROKEN_DOWN = ("colour", "shape", "size")
OUTCOMES = ("right", "swapped", "wrong", "missing")
GROUPS = tuple(f"{kind}, {size}" for kind in ("one object", "two objects") for size in SIZES)


def error_breakdown(scenes: list[Scene], judgements: list[Judgement]) -> dict[str, dict[str, Counter]]:
    """{attribute: {group: Counter(outcome -> objects)}} for attribute in BROKEN_DOWN and group
    in GROUPS ("one object, small", ..., "two objects, large")."""
    table = {attribute: {group: Counter() for group in GROUPS} for attribute in BROKEN_DOWN}
    for scene, judgement in zip(scenes, judgements, strict=True):
        kind = "one object" if len(scene.objects) == 1 else "two objects"
        for index, (truth, found) in enumerate(zip(scene.objects, match_objects(scene, judgement.objects))):
            other = scene.objects[1 - index] if len(scene.objects) == 2 else None
            for attribute in BROKEN_DOWN:
                table[attribute][f"{kind}, {truth.size}"][_outcome(attribute, truth, found, other)] += 1
    return table


def _outcome(attribute: str, truth, found, other) -> str:
    if found is None:
        return "missing"
    value = getattr(found, attribute)
    if value == getattr(truth, attribute):
        return "right"
    if other is not None and value == getattr(other, attribute):
        return "swapped"
    return "wrong"


def format_breakdown(table: dict[str, dict[str, Counter]]) -> str:
    """Markdown table: one row per (attribute, group) with object counts per outcome."""
    lines = ["| attribute | objects | " + " | ".join(OUTCOMES) + " |", "|" + "---|" * (len(OUTCOMES) + 2)]
    for attribute, groups in table.items():
        for group, counts in groups.items():
            total = sum(counts.values())
            if total:
                lines.append(
                    f"| {attribute} | {group}: {total} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |"
                )
    return "\n".join(lines)
