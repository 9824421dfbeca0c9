import json
import random

import numpy as np
import pytest

from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
from openkontext.session import PENDING, Session, SessionError, Tree
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene


@pytest.fixture(scope="module")
def kontext():
    return Kontext(LoadedModel.random("mini", seed=1))


@pytest.fixture
def session(kontext):
    image = to_pil(render(random_scene(random.Random(5), min_objects=2), 64))
    return kontext.session(image, steps=1, seed=3)


def test_turns_chain_on_the_latest_output(session):
    t1 = session.edit("make the circle blue")
    t2 = session.edit("remove the square")
    assert (t1.number, t1.parent, t2.parent) == (1, 0, 1)
    assert session.head == 2
    assert [t.number for t in session.history()] == [1, 2]
    assert session.current is t2.image


def test_undo_and_branch_keep_every_turn(session):
    session.edit("a")
    session.edit("b")
    assert session.undo() == 1
    t3 = session.edit("c")
    assert t3.parent == 1
    assert [t.number for t in session.history()] == [1, 3]
    session.branch(2)
    assert [t.number for t in session.history()] == [1, 2]
    session.branch(0)
    assert session.history() == []
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()
    with pytest.raises(SessionError, match="no turn 9"):
        session.branch(9)


def test_save_and_load_round_trip(session, kontext, tmp_path):
    session.edit("a")
    session.edit("b")
    session.undo()
    folder = session.save(tmp_path / "s")
    doc = json.loads((folder / "session.json").read_text())
    assert doc["head"] == 1 and len(doc["turns"]) == 2
    loaded = Session.load(kontext, folder)
    assert loaded.head == 1
    assert [t.instruction for t in loaded.turns] == ["a", "b"]
    assert np.array_equal(np.asarray(loaded.turn(2).image), np.asarray(session.turn(2).image))
    assert np.array_equal(np.asarray(loaded.original), np.asarray(session.original))
    assert not list(folder.glob("*.tmp"))


def test_load_errors_name_the_problem(kontext, tmp_path):
    with pytest.raises(SessionError, match="not a saved session"):
        Session.load(kontext, tmp_path)
    (tmp_path / "session.json").write_text("{bad json")
    with pytest.raises(SessionError, match="damaged"):
        Session.load(kontext, tmp_path)


def test_session_from_text_generates_first(kontext):
    s = kontext.session(None, steps=1, seed=0)
    t = s.edit("on white: small red circle center")
    assert t.image.size == (64, 64)
    with pytest.raises(SessionError, match="started from text"):
        s.branch(0)


def test_a_version_1_folder_still_loads(session, kontext, tmp_path):
    session.edit("a")
    folder = session.save(tmp_path / "s")
    doc = json.loads((folder / "session.json").read_text())
    old = ("number", "parent", "instruction", "seed", "settings", "seconds", "image")
    v1 = {"version": 1, "head": 1, "has_original": True, "defaults": doc["defaults"],
          "turns": [{k: t[k] for k in old} for t in doc["turns"]]}
    (folder / "session.json").write_text(json.dumps(v1))
    loaded = Session.load(kontext, folder)
    assert loaded.turn(1).status == "Ready" and loaded.turn(1).seed == session.turn(1).seed
    assert np.array_equal(np.asarray(loaded.turn(1).image), np.asarray(session.turn(1).image))


def test_the_tree_needs_no_model():
    tree = Tree("turn_0.jpg")
    t1 = tree.add(0, "make it red", None, {"steps": 1}, status=PENDING, job_id="j1")
    t2 = tree.add(0, "make it red", None, {"steps": 1}, status=PENDING, job_id="j1")
    tree.head = t1.number
    t1.status, t1.file, t1.seed = "Ready", "turn_1.png", 5
    t3 = tree.add(1, "now blue", 6, {}, references=["ref_ab.png"])
    assert (t2.parent, t3.parent, tree.branch(3)) == (0, 1, 3)
    assert [t.number for t in tree.history()] == [1, 3]
    assert tree.files() == ["turn_0.jpg", "turn_1.png", "ref_ab.png"]
    again = Tree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert again.to_dict() == tree.to_dict() and again.turn(2).status == PENDING
    with pytest.raises(SessionError, match="no turn 9"):
        tree.add(9, "x", None, {})
    with pytest.raises(SessionError, match="damaged"):
        Tree.from_dict({**tree.to_dict(), "head": 7})


def test_a_turn_without_a_picture_is_not_edited(kontext, session, tmp_path):
    """A session exported by the server may hold turns that failed: they have no picture."""
    session.edit("a")
    folder = session.save(tmp_path / "s")
    doc = json.loads((folder / "session.json").read_text())
    doc["turns"].append({**doc["turns"][0], "number": 2, "parent": 1, "image": None,
                         "status": "Error", "details": {"error": "cancelled by request"}})
    doc["head"] = 2
    (folder / "session.json").write_text(json.dumps(doc))
    loaded = Session.load(kontext, folder)
    assert loaded.turn(2).image is None
    with pytest.raises(SessionError, match="turn 2 has no picture"):
        loaded.edit("b")
    loaded.undo()
    assert loaded.edit("b").parent == 1
