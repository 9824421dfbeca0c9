import json
import random

import pytest

from openkontext.world.scene import (
    CELLS,
    COLORS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    SceneError,
    Target,
    random_scene,
)

SPEC_EXAMPLE = {
    "background": "yellow",
    "objects": [{"shape": "circle", "color": "red", "cell": "top left", "size": "medium"}],
}


def test_vocabulary_is_the_spec():
    assert COLORS["red"] == (220, 40, 40) and COLORS["gray"] == (128, 128, 128)
    assert len(COLORS) == 11
    assert SHAPES == ("circle", "square", "triangle", "diamond", "star")
    assert CELLS == ("top left", "top", "top right", "left", "center", "right",
                     "bottom left", "bottom", "bottom right")
    assert SIZES == {"small": 0.09, "medium": 0.13, "large": 0.17}


def test_spec_example_round_trips_exactly():
    scene = Scene.from_json(json.dumps(SPEC_EXAMPLE))
    assert scene.objects == (Obj("circle", "red", "top left", "medium"),)
    assert scene.to_dict() == SPEC_EXAMPLE
    assert Scene.from_json(scene.to_json()) == scene


def test_objects_are_kept_in_reading_order():
    a = Obj("star", "blue", "bottom right", "small")
    b = Obj("square", "red", "top", "large")
    assert Scene("white", (a, b)) == Scene("white", (b, a))
    assert [o["cell"] for o in Scene("white", (a, b)).to_dict()["objects"]] == ["top",
                                                                                 "bottom right"]


def test_target_json_carries_the_filter():
    t = Target(Scene.from_dict(SPEC_EXAMPLE), "night")
    d = t.to_dict()
    assert d["filter"] == "night" and d["background"] == "yellow"
    assert Target.from_json(t.to_json()) == t
    assert "filter" not in Target(t.scene).to_dict()
    assert Target.from_dict(SPEC_EXAMPLE) == Target(t.scene, None)


@pytest.mark.parametrize("change, message", [
    ({"background": "teal"}, "unknown background colour 'teal'"),
    ({"objects": [{"shape": "hexagon", "color": "red", "cell": "top", "size": "small"}]},
     "unknown shape 'hexagon'"),
    ({"objects": [{"shape": "star", "color": "navy", "cell": "top", "size": "small"}]},
     "unknown colour 'navy'"),
    ({"objects": [{"shape": "star", "color": "red", "cell": "middle", "size": "small"}]},
     "unknown cell 'middle'"),
    ({"objects": [{"shape": "star", "color": "red", "cell": "top", "size": "huge"}]},
     "unknown size 'huge'"),
    ({"objects": [{"shape": "star", "color": "red", "cell": "top", "size": "small"},
                  {"shape": "circle", "color": "blue", "cell": "top", "size": "large"}]},
     "two objects in one cell: 'top'"),
    ({"objects": [{"shape": "star", "color": "yellow", "cell": "top", "size": "small"}]},
     "colour of the background"),
    ({"objects": [{"shape": "star", "color": "red", "cell": c, "size": "small"}
                  for c in CELLS[:5]]}, "at most 4 objects"),
    ({"objects": [{"shape": "star", "color": "red", "cell": "top"}]}, "missing size"),
    ({"objects": [{"shape": "star", "color": "red", "cell": "top", "size": "small",
                   "angle": 3}]}, "unknown keys angle"),
    ({"objects": "star"}, "'objects' must be a list"),
    ({"lighting": "dim"}, "unknown keys lighting"),
])
def test_bad_scenes_are_refused_with_a_clear_error(change, message):
    with pytest.raises(SceneError, match=message):
        Scene.from_dict({**SPEC_EXAMPLE, **change})


def test_bad_json_and_filters_are_refused():
    with pytest.raises(SceneError, match="not valid JSON"):
        Scene.from_json("{background: yellow")
    with pytest.raises(SceneError, match="missing 'background'"):
        Scene.from_dict({"objects": []})
    with pytest.raises(SceneError, match="unknown filter 'sepia'"):
        Target.from_dict({**SPEC_EXAMPLE, "filter": "sepia"})
    with pytest.raises(SceneError, match="must be a JSON object"):
        Scene.from_json("[1, 2]")


def test_random_scenes_are_valid_varied_and_seeded():
    rng = random.Random(3)
    scenes = [random_scene(rng) for _ in range(300)]
    assert {len(s.objects) for s in scenes} == {0, 1, 2, 3, 4}
    for s in scenes:
        assert Scene.from_json(s.to_json()) == s
        assert s.background not in {o.color for o in s.objects}
    again = random.Random(3)
    assert [random_scene(again) for _ in range(300)] == scenes
    assert all(len(random_scene(rng, 4, 4).objects) == 4 for _ in range(20))
