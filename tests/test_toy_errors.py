"""The error breakdown tells binding errors (an object drawn with the other object's value)
from drawing errors and missing objects, on rendered scenes whose truth is known."""

from dataclasses import replace

from diffdict.toyworld.errors import GROUPS, error_breakdown, format_breakdown
from diffdict.toyworld.judge import judge
from diffdict.toyworld.render import render
from diffdict.toyworld.scenes import COLOURS, eval_scenes


def _totals(table: dict, attribute: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for counts in table[attribute].values():
        for outcome, n in counts.items():
            totals[outcome] = totals.get(outcome, 0) + n
    return totals


def _judged(scenes):
    return [judge(render(scene).image) for scene in scenes]


def _pairs_differing_in_colour_and_shape(n: int):
    pairs = [
        s
        for s in eval_scenes(96)
        if len(s.objects) == 2
        and s.objects[0].colour != s.objects[1].colour
        and s.objects[0].shape != s.objects[1].shape
    ]
    assert len(pairs) >= n
    return pairs[:n]


def test_ground_truth_is_all_right():
    scenes = list(eval_scenes(48))
    table = error_breakdown(scenes, _judged(scenes))
    objects = sum(len(s.objects) for s in scenes)
    for attribute in ("colour", "shape", "size"):
        assert _totals(table, attribute) == {"right": objects}
    assert set(table["colour"]) == set(GROUPS)


def test_swapped_colours_and_shapes_are_binding_errors():
    scenes = _pairs_differing_in_colour_and_shape(8)
    drawn = [
        replace(s, objects=(replace(a, colour=b.colour, shape=b.shape), replace(b, colour=a.colour, shape=a.shape)))
        for s in scenes
        for a, b in [s.objects]
    ]
    table = error_breakdown(scenes, _judged(drawn))
    assert _totals(table, "colour") == {"swapped": 16}
    assert _totals(table, "shape") == {"swapped": 16}
    assert _totals(table, "size") == {"right": 16}  # sizes were not swapped
    assert sum(table["colour"]["one object, small"].values()) == 0


def test_other_values_are_wrong_and_absent_objects_missing():
    scenes = _pairs_differing_in_colour_and_shape(6)
    spare = {s.seed: next(c for c in COLOURS if c not in {o.colour for o in s.objects}) for s in scenes}
    # First object recoloured with a colour neither object has; second object not drawn.
    drawn = [replace(s, objects=(replace(s.objects[0], colour=spare[s.seed]),)) for s in scenes]
    table = error_breakdown(scenes, _judged(drawn))
    assert _totals(table, "colour") == {"wrong": 6, "missing": 6}
    assert _totals(table, "shape") == {"right": 6, "missing": 6}
    text = format_breakdown(table)
    assert text.splitlines()[0] == "| attribute | objects | right | swapped | wrong | missing |"
    assert "| colour | two objects, " in text


def test_toy_eval_prints_and_saves_the_breakdown(tmp_path, capsys):
    import json

    from diffdict.studies.cli import main

    assert (
        main(
            [
                "toy",
                "eval",
                "toy/sdxl-turbo",
                "--n",
                "8",
                "--batch",
                "8",
                "--errors",
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "toy/sdxl-turbo: objects by outcome" in out and "| shape | one object, " in out
    report = json.loads((tmp_path / "eval.json").read_text())
    colour = report["errors"]["toy/sdxl-turbo"]["colour"]
    objects = sum(len(s.objects) for s in eval_scenes(8))
    assert sum(n for counts in colour.values() for n in counts.values()) == objects
