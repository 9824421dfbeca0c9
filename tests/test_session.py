import json
import random

import numpy as np
import pytest

from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
from openkontext.session import Session, SessionError
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
