"""Sessions against a real server (docs/web.md): a tree of turns that are jobs,
its pictures behind signed URLs, kept across restarts, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from openkontext.pipeline import Kontext
from openkontext.serve import urls
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.session import Session

from .conftest import SlowKontext, png_b64, png_bytes, start_server

FAST = {"steps": 1}


def new_session(live, **body) -> dict:
    r = live.client.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def add(live, sid: str, prompt: str, **fields) -> dict:
    r = live.client.post(f"/v1/sessions/{sid}/turns", json={"prompt": prompt, **FAST, **fields})
    assert r.status_code == 202, r.text
    return r.json()


def settled(live, sid: str, timeout: float = 60.0) -> dict:
    """The session once none of its turns is Pending."""
    deadline = time.monotonic() + timeout
    while True:
        body = live.client.get(f"/v1/sessions/{sid}").json()
        if all(t["status"] != "Pending" for t in body["turns"]):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def fetch(live, url: str) -> bytes:
    r = live.client.get(url)
    assert r.status_code == 200, r.text
    return r.content


def test_a_session_grows_a_tree_of_turns(serve, db_url, mini_model, tmp_path):
    live = serve(database_url=db_url)
    s = new_session(live, name="a walk", input_image=png_b64())
    sid = s["id"]
    assert (s["name"], s["head"], s["turns"]) == ("a walk", 0, [])
    assert fetch(live, s["original"]) == png_bytes()  # kept as it was given
    # 1. A turn is a job; its picture is the job's result, byte for byte.
    made = add(live, sid, "make the square green", seed=7)
    assert made["turns"] == [1] and made["session"]["head"] == 1
    t1 = settled(live, sid)["turns"][0]
    assert (t1["status"], t1["parent"], t1["seed"], t1["progress"]) == ("Ready", 0, 7, 1.0)
    job = live.client.get("/v1/get_result", params={"id": t1["job_id"]}).json()
    assert fetch(live, t1["image"]) == fetch(live, job["result"]["sample"])
    # 2. The next turn edits the head; branching from turn 1 keeps turn 2.
    assert add(live, sid, "remove the square")["turns"] == [2]
    assert live.client.post(f"/v1/sessions/{sid}/head", json={"turn": 1}).json()["head"] == 1
    assert add(live, sid, "make the background blue")["session"]["head"] == 3
    settled(live, sid)
    # 3. num_images 2: two sibling turns of one job, consecutive seeds; then a try again.
    assert add(live, sid, "add a circle", num_images=2, seed=100)["turns"] == [4, 5]
    assert add(live, sid, "add a circle", parent=3)["turns"] == [6]
    # 4. A reference is kept with the session and shown.
    ref = png_b64((48, 48))
    assert add(live, sid, "like this", parent=2, input_image_2=ref)["turns"] == [7]
    s = settled(live, sid)
    turns = {t["number"]: t for t in s["turns"]}
    assert [turns[n]["parent"] for n in range(1, 8)] == [0, 1, 1, 3, 3, 3, 2]
    assert all(t["status"] == "Ready" and t["image"] for t in s["turns"])
    assert (turns[4]["seed"], turns[5]["seed"]) == (100, 101)
    assert turns[4]["job_id"] == turns[5]["job_id"] != turns[6]["job_id"]
    assert fetch(live, turns[4]["image"]) != fetch(live, turns[5]["image"])
    assert len(turns[7]["references"]) == 1 and turns[1]["references"] == []
    assert fetch(live, turns[7]["references"][0]) == png_bytes((48, 48))
    assert turns[7]["settings"]["tier"] == "pro" and turns[7]["settings"]["steps"] == 1
    # 5. Rename; the zip holds the tree and every picture.
    r = live.client.patch(f"/v1/sessions/{sid}", json={"name": "a walk, kept"})
    assert r.json()["name"] == "a walk, kept"
    r = live.client.get(f"/v1/sessions/{sid}/zip")
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="a walk_ kept.zip"' in r.headers["content-disposition"]
    assert "filename*=UTF-8''a%20walk%2C%20kept.zip" in r.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    doc = json.loads(archive.read("session.json"))
    assert doc["head"] == 7 and doc["name"] == "a walk, kept"
    assert [(t["parent"], t["instruction"], t["seed"]) for t in doc["turns"]] == [
        (turns[n]["parent"], turns[n]["instruction"], turns[n]["seed"]) for n in range(1, 8)]
    for t in doc["turns"]:
        assert archive.read(t["image"]) == fetch(live, turns[t["number"]]["image"])
    assert archive.read(doc["original"]) == png_bytes()
    # 6. ... and opens as a local session, the one model of a session.
    archive.extractall(tmp_path / "unzipped")
    local = Session.load(Kontext(mini_model), tmp_path / "unzipped")
    assert local.head == 7 and [t.number for t in local.history()] == [1, 2, 7]
    picture = np.asarray(local.turn(4).image)
    assert picture.shape == (64, 64, 3)


def test_sessions_are_listed_newest_first_with_a_thumbnail(serve):
    live = serve()
    first = new_session(live, name="first", input_image=png_b64())
    new_session(live, name="second")
    listed = live.client.get("/v1/sessions").json()["sessions"]
    assert [s["name"] for s in listed] == ["second", "first"]
    assert listed[0]["thumbnail"] is None and listed[1]["turns"] == 0
    assert fetch(live, listed[1]["thumbnail"]) == png_bytes()
    add(live, first["id"], "make it red")
    settled(live, first["id"])
    listed = live.client.get("/v1/sessions").json()["sessions"]
    assert [s["name"] for s in listed] == ["first", "second"] and listed[0]["turns"] == 1
    assert "turn_1" in listed[0]["thumbnail"]


def test_a_restarted_server_shows_the_same_session(serve, db_url, tmp_path):
    live = serve(database_url=db_url, data_dir=tmp_path / "kept")
    sid = new_session(live, input_image=png_b64())["id"]
    add(live, sid, "make the square green", seed=3)
    before = settled(live, sid)
    pictures = [fetch(live, before["original"]), fetch(live, before["turns"][0]["image"])]
    live.stop()
    again = serve(database_url=db_url, data_dir=tmp_path / "kept")
    after = again.client.get(f"/v1/sessions/{sid}").json()
    strip = ("image", "original", "references", "progress")
    assert {k: v for k, v in after.items() if k not in strip and k != "turns"} == {
        k: v for k, v in before.items() if k not in strip and k != "turns"}
    assert [{k: v for k, v in t.items() if k not in strip} for t in after["turns"]] == [
        {k: v for k, v in t.items() if k not in strip} for t in before["turns"]]
    assert [fetch(again, after["original"]), fetch(again, after["turns"][0]["image"])] == pictures


def test_a_turn_whose_job_ran_unread_is_ready_on_the_next_read(serve, db_url):
    live = serve(database_url=db_url)
    live.services.worker.on_session_job = lambda job_id: None  # as if its process had died
    sid = new_session(live)["id"]  # from text: the turn is a generation
    turn = add(live, sid, "on white: small red circle center")["session"]["turns"][0]
    done = live.wait(f"{live.url}/v1/get_result?id={turn['job_id']}")
    assert done["status"] == "Ready"
    stored = live.services.sessions.get(sid, None).tree.turn(1)
    assert stored.status == "Pending"  # nobody has read the session since
    t1 = live.client.get(f"/v1/sessions/{sid}").json()["turns"][0]
    assert t1["status"] == "Ready" and fetch(live, t1["image"]) == fetch(
        live, done["result"]["sample"])
    assert live.services.sessions.get(sid, None).tree.turn(1).file == "turn_1.png"


def test_a_second_settler_of_a_turn_changes_nothing(serve, db_url):
    """The worker's hook and a reader may both find a turn's job finished; the one that comes
    second records nothing, so the session's updated_at stays what the first reader saw."""
    live = serve(database_url=db_url)
    live.services.worker.on_session_job = lambda job_id: None  # the reader settles it first
    sid = new_session(live)["id"]
    turn = add(live, sid, "on white: small red circle center")["session"]["turns"][0]
    live.wait(f"{live.url}/v1/get_result?id={turn['job_id']}")
    stale = live.services.sessions.get(sid, None)
    assert stale.tree.turn(1).status == "Pending"
    read = live.client.get(f"/v1/sessions/{sid}").json()
    assert read["turns"][0]["status"] == "Ready"
    late = live.services.sessions.settle(stale)  # the hook, with what it read before
    assert late.updated_at == read["updated_at"] and late.tree.turn(1).status == "Ready"
    assert live.client.get(f"/v1/sessions/{sid}").json() == read


def test_the_worker_settles_a_turn_as_its_job_finishes(serve):
    live = serve()
    sid = new_session(live, input_image=png_b64())["id"]
    job_id = add(live, sid, "make it blue")["session"]["turns"][0]["job_id"]
    live.wait(f"{live.url}/v1/get_result?id={job_id}")
    deadline = time.monotonic() + 10
    while live.services.sessions.get(sid, None).tree.turn(1).status == "Pending":
        assert time.monotonic() < deadline, "the worker's hook never settled the turn"
        time.sleep(0.02)
    assert live.services.sessions.get(sid, None).tree.turn(1).status == "Ready"


def test_cancel_a_running_turn_then_delete_the_session(serve, mini_model):
    live = serve(kontext=SlowKontext(mini_model, step_delay=0.2))
    sid = new_session(live)["id"]
    made = add(live, sid, "on white: small red circle center", steps=20)
    job_id = made["session"]["turns"][0]["job_id"]
    deadline = time.monotonic() + 30
    while not live.client.get(f"/v1/sessions/{sid}").json()["turns"][0]["progress"]:
        assert time.monotonic() < deadline, "the turn never started"
        time.sleep(0.05)
    # Its parent is not Ready: no turn can edit it yet.
    r = live.client.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x", "parent": 1})
    assert r.status_code == 409 and "not Ready" in r.json()["detail"]
    r = live.client.post(f"/v1/sessions/{sid}/turns/1/cancel")
    assert r.status_code == 200
    t1 = settled(live, sid, timeout=30)["turns"][0]
    assert t1["status"] == "Error" and "cancelled" in t1["details"]["error"]
    assert t1["image"] is None
    # Delete: a pending turn's job is cancelled, the pictures go.
    second = new_session(live, input_image=png_b64())["id"]
    job_id = add(live, second, "make it blue", steps=20)["session"]["turns"][0]["job_id"]
    folder = live.services.sessions.folder(second)
    assert folder.is_dir()
    assert live.client.delete(f"/v1/sessions/{second}").status_code == 204
    assert live.client.get(f"/v1/sessions/{second}").status_code == 404
    assert live.client.delete(f"/v1/sessions/{second}").status_code == 404
    assert live.wait(f"{live.url}/v1/get_result?id={job_id}")["status"] == "Error"
    assert not folder.exists()


def test_each_key_sees_only_its_own_sessions(serve):
    live = serve(api_keys=["key-a", "key-b"])
    a, b = {"x-key": "key-a"}, {"x-key": "key-b"}
    sid = live.client.post("/v1/sessions", json={"name": "mine"}, headers=a).json()["id"]
    assert live.client.get(f"/v1/sessions/{sid}", headers=a).status_code == 200
    assert live.client.get(f"/v1/sessions/{sid}", headers=b).status_code == 404
    assert live.client.get("/v1/sessions", headers=b).json() == {"sessions": []}
    for r in (live.client.patch(f"/v1/sessions/{sid}", json={"name": "yours"}, headers=b),
              live.client.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x"}, headers=b),
              live.client.delete(f"/v1/sessions/{sid}", headers=b)):
        assert r.status_code == 404
    assert live.client.get(f"/v1/sessions/{sid}").status_code == 401
    assert live.client.get(f"/v1/sessions/{sid}", headers=a).json()["name"] == "mine"


def test_bad_requests_get_4xx_naming_what_was_wrong(serve):
    live = serve(max_sessions_per_key=2)
    c = live.client
    r = c.post("/v1/sessions", json={"input_image": "aGVsbG8gd29ybGQ="})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input_image"]
    s = new_session(live, input_image=png_b64())
    sid = s["id"]

    def refused(body: dict, status: int, field: str | None = None) -> str:
        r = c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x", **body})
        assert r.status_code == status, r.text
        if field is not None:
            assert r.json()["detail"][0]["loc"] == ["body", field], r.text
            return r.json()["detail"][0]["msg"]
        return r.json()["detail"]

    assert "no turn 9" in refused({"parent": 9}, 422, "parent")
    refused({"parent": -1}, 422, "parent")
    refused({"input_image": png_b64()}, 422, "input_image")
    refused({"tier": "ultra"}, 422, "tier")
    refused({"style_preset": "velvet"}, 422, "style_preset")
    refused({"input_image_2": "bm90IGFuIGltYWdl"}, 422, "input_image_2")
    refused({"steps": 51}, 422, "steps")
    # Unknown sessions, and ids no session can have, are 404.
    for bad in ("0" * 36, "x" * 300, "a%00b"):
        assert c.get(f"/v1/sessions/{bad}").status_code == 404
        assert c.post(f"/v1/sessions/{bad}/turns", json={"prompt": "x"}).status_code == 404
    assert c.post(f"/v1/sessions/{sid}/head", json={"turn": 5}).status_code == 422
    assert c.post(f"/v1/sessions/{sid}/turns/5/cancel").status_code == 404
    # A session from text has no turn 0 picture, and no references without a picture.
    text_only = new_session(live)["id"]
    r = c.post(f"/v1/sessions/{text_only}/head", json={"turn": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "turn"]
    r = c.post(f"/v1/sessions/{text_only}/turns", json={"prompt": "x", "input_image_2": png_b64()})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input_image_2"]
    # The key's limit of sessions.
    r = c.post("/v1/sessions", json={})
    assert r.status_code == 409 and "max_sessions_per_key" in r.json()["detail"]
    # Signed picture URLs: a bad signature, an expired one, a name the session does not hold.
    good = s["original"]
    assert c.get(good.replace("sig=", "sig=x")).status_code == 403
    secret = live.services.settings.signing_secret()
    path = urls.session_image_path(sid, "turn_0.png")
    assert c.get(urls.signed_url(live.url, path, secret, ttl=-5)).status_code == 410
    for name in ("turn_9.png", "..%2Fjobs.sqlite3", "url-secret"):
        path = urls.session_image_path(sid, name)
        assert c.get(urls.signed_url(live.url, path, secret, ttl=60)).status_code == 404


def test_info_says_what_the_server_offers(serve, tmp_path, mini_model):
    live = serve(api_keys=["k"])
    info = live.client.get("/v1/info").json()  # no key needed
    assert info == {
        "model": "mini", "native_size": 64, "max_side": 128,
        "default_steps": mini_model.preset.default_steps,
        "default_guidance": mini_model.preset.default_guidance,
        "aspect_ratios": ["2:1", "16:9", "1:1", "9:16", "1:2"],
        "style_presets": info["style_presets"], "tiers": ["dev", "pro", "max"],
        "auth_required": True, "prompt_upsampling": False,
        "max_input_bytes": 10 * 1024 * 1024, "state": "ok",
    }
    assert "watercolor" in info["style_presets"]
    # While the model loads: the server's facts, no model's.
    loaded = threading.Event()

    def slow_factory() -> Kontext:
        loaded.wait(30)
        return Kontext(mini_model)

    app = create_app(ServeSettings(data_dir=tmp_path / "loading", image_classifier="none"),
                     slow_factory)
    server, thread, url = start_server(app)
    try:
        import httpx

        info = httpx.get(f"{url}/v1/info", trust_env=False).json()
        assert info["state"] == "loading" and info["model"] is None
        assert info["aspect_ratios"] is None and info["tiers"] == ["dev", "pro", "max"]
    finally:
        loaded.set()
        server.should_exit = True
        thread.join(30)


def test_a_refused_prompt_is_a_moderated_turn_at_once(serve):
    from openkontext.serve.moderation import TextPolicy

    live = serve()
    live.services.text_policy = TextPolicy([(6, ["forbidden"])])
    sid = new_session(live, input_image=png_b64())["id"]
    made = add(live, sid, "something forbidden")
    t1 = made["session"]["turns"][0]
    assert t1["status"] == "Request Moderated" and t1["image"] is None
    r = live.client.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x", "parent": 1})
    assert r.status_code == 409


@pytest.mark.parametrize("name, plain", [("", "session-"), ("Ünïcode/名前", "Unicode.zip")])
def test_zip_names_are_safe(serve, name, plain):
    live = serve()
    sid = new_session(live, name=name)["id"]
    disposition = live.client.get(f"/v1/sessions/{sid}/zip").headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{plain}')
    assert disposition.isascii()


def test_two_servers_add_turns_to_one_session_at_once(serve, db_url, tmp_path):
    """Each update re-reads the tree under a lock: no turn is lost, none numbered twice, and
    each turn gets its own job's picture."""
    import httpx

    servers = [serve(database_url=db_url, data_dir=tmp_path / "shared") for _ in range(2)]
    sid = new_session(servers[0])["id"]

    def post(i: int) -> httpx.Response:
        return httpx.post(f"{servers[i % 2].url}/v1/sessions/{sid}/turns", trust_env=False,
                          json={"prompt": "on white: small red circle center", "parent": 0,
                                "seed": i, **FAST}, timeout=30)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert [r.status_code for r in answers] == [202] * 6
    assert sorted(n for r in answers for n in r.json()["turns"]) == [1, 2, 3, 4, 5, 6]
    turns = settled(servers[1], sid)["turns"]
    assert sorted(t["seed"] for t in turns) == list(range(6))
    assert len({t["job_id"] for t in turns}) == 6
    for t in turns:
        job = servers[0].client.get("/v1/get_result", params={"id": t["job_id"]}).json()
        assert job["result"]["seed"] == t["seed"]
        assert fetch(servers[0], t["image"]) == fetch(servers[0], job["result"]["sample"])


def test_a_zero_retention_server_keeps_no_sessions(serve):
    live = serve(zero_retention=True)
    r = live.client.post("/v1/sessions", json={"name": "x"})
    assert r.status_code == 409 and "zero_retention" in r.json()["detail"]
    assert live.client.get("/v1/sessions").json() == {"sessions": []}
