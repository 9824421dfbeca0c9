"""The web page in a real browser against a real server on the embedded model: upload, converse,
branch, reload, restart, errors, cancel, phone width. Element ids: the list at the top of
src/openkontext/serve/web/app.js."""

from __future__ import annotations

import re

import httpx
import pytest

from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene

from .conftest import new_page, start_server

SCENE = {"background": "gray", "objects": [
    {"shape": "circle", "color": "red", "cell": "top left", "size": "large"},
    {"shape": "square", "color": "blue", "cell": "bottom right", "size": "medium"},
]}


@pytest.fixture
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    to_pil(render(Scene.from_dict(SCENE))).save(path)
    return path


def _open(page, url: str) -> None:
    page.goto(url)
    page.locator("#model-state").wait_for(state="attached")


def _upload(page, path) -> None:
    page.locator("#upload").set_input_files(str(path))
    page.locator('#turns li[data-turn="0"]').wait_for()


def _send(page, instruction: str, turn: int) -> None:
    page.locator("#instruction").fill(instruction)
    page.locator("#instruction").press("Enter")
    _ready(page, turn)


def _ready(page, turn: int) -> None:
    item = page.locator(f'#turns li[data-turn="{turn}"]')
    item.wait_for()
    page.wait_for_function(
        f"""() => {{ const li = document.querySelector('#turns li[data-turn="{turn}"]');
                     return li && !li.classList.contains('pending'); }}""", timeout=60_000)


def _session(server, page) -> dict:
    session_id = re.search(r"session=([0-9a-f-]+)", page.url)[1]
    return httpx.get(f"{server.url}/v1/sessions/{session_id}", timeout=30).json()


def test_upload_converse_branch_reload_and_restart(page, server, scene_png):
    _open(page, server.url)
    _upload(page, scene_png)
    _send(page, "make the background green", 1)
    # The picture shown is the job's result, byte for byte.
    session = _session(server, page)
    turn = session["turns"][0]
    shown = page.locator("#current").get_attribute("src")
    shown_bytes = httpx.get(httpx.URL(server.url).join(shown), timeout=30).content
    job = httpx.get(f"{server.url}/v1/get_result", params={"id": turn["job_id"]}).json()
    assert job["status"] == "Ready"
    assert shown_bytes == httpx.get(job["result"]["sample"], timeout=30).content
    assert page.locator("#current").get_attribute("data-turn") == "1"
    # A second turn, then back to turn 1 and a branch from it.
    _send(page, "remove the square", 2)
    page.locator('#turns li[data-turn="1"] button.turn-select').click()
    page.wait_for_function(
        """() => document.querySelector('#turns li[data-turn="1"]').classList.contains('head')""")
    _send(page, "make it night", 3)
    parents = {t["number"]: t["parent"] for t in _session(server, page)["turns"]}
    assert parents == {1: 0, 2: 1, 3: 1}
    # Reload: the same session, the same tree, the head where it was.
    page.reload()
    page.locator('#turns li[data-turn="3"]').wait_for()
    assert page.locator("#turns li.head").get_attribute("data-turn") == "3"
    assert page.locator("#turns li[data-turn]").count() == 4
    # Restart the server on the same data: the page, reloaded, shows the same tree.
    url = page.url
    server.stop()
    again = start_server(server.data_dir)
    try:
        page.goto(url.replace(server.url, again.url))
        page.locator('#turns li[data-turn="3"]').wait_for()
        assert page.locator("#turns li[data-turn]").count() == 4
        src = page.locator("#current").get_attribute("src")
        assert httpx.get(httpx.URL(again.url).join(src), timeout=30).status_code == 200
    finally:
        again.stop()


def test_a_file_that_is_not_a_picture_shows_the_error(page, server, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not a picture")
    _open(page, server.url)
    page.locator("#upload").set_input_files(str(notes))
    error = page.locator("#error")
    error.wait_for()
    page.wait_for_function("() => document.querySelector('#error').textContent.trim() !== ''")
    assert "image" in error.inner_text().lower()


def test_cancel_a_running_turn(browser, tmp_path, scene_png):
    slow = start_server(tmp_path / "slow", step_delay=1.0)
    page = new_page(browser)
    try:
        _open(page, slow.url)
        _upload(page, scene_png)
        page.locator("#instruction").fill("make the circle blue")
        page.locator("#send").click()
        page.locator('#turns li[data-turn="1"].pending').wait_for()
        page.locator("#cancel").click()
        _ready(page, 1)
        turn = _session(slow, page)["turns"][0]
        assert turn["status"] == "Error"
        assert turn["details"] == {"error": "cancelled by request"}
        assert "cancel" in page.locator("#error").inner_text().lower() or \
            page.locator('#turns li[data-turn="1"].failed').count() == 1
    finally:
        page.context.close()
        slow.stop()


def test_phone_width(browser, server, scene_png):
    page = new_page(browser, 390, 844)
    try:
        _open(page, server.url)
        _upload(page, scene_png)
        _send(page, "make the background green", 1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for control in ("#instruction", "#send", "#current"):
            box = page.locator(control).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, control
    finally:
        page.context.close()


def test_a_server_with_keys_asks_for_one_and_never_puts_it_in_a_url(browser, tmp_path,
                                                                    scene_png):
    keyed = start_server(tmp_path / "keyed", api_keys='["sesame"]')
    page = new_page(browser)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    try:
        page.goto(keyed.url)
        page.locator("#key-dialog").wait_for()
        page.locator("#key-input").fill("wrong")
        page.locator("#key-save").click()
        page.locator("#upload").set_input_files(str(scene_png))
        page.locator("#key-dialog").wait_for()  # the upload was refused: asked again
        assert "refused" in page.locator("#key-dialog").inner_text()
        page.locator("#key-input").fill("sesame")
        page.locator("#key-save").click()
        page.locator('#turns li[data-turn="0"]').wait_for()
        _send(page, "make the background green", 1)
        session_id = re.search(r"session=([0-9a-f-]+)", page.url)[1]
        r = httpx.get(f"{keyed.url}/v1/sessions/{session_id}", headers={"x-key": "sesame"})
        assert r.json()["turns"][0]["status"] == "Ready"
        assert httpx.get(f"{keyed.url}/v1/sessions/{session_id}").status_code == 401
        assert urls and not [u for u in urls if "sesame" in u or "wrong" in u]
    finally:
        page.context.close()
        keyed.stop()
