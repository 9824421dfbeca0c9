"""The web page's pictures in the README and docs/web.md: a real session, driven in a browser.

Starts `openkontext serve`'s app on the embedded model (127.0.0.1, a free port, a temporary
data dir), then drives Debian's chromium through Playwright as a person would: upload a Shapes
World scene, three instructions, back to the first turn and a branch from it. Screenshots at
1280 x 800 and at phone width (390 x 844). Whatever the model makes is what the pictures show.

Usage: python scripts/web_screenshots.py [--out docs/images] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene

SCENE = {"background": "gray", "objects": [
    {"shape": "circle", "color": "red", "cell": "top left", "size": "large"},
    {"shape": "star", "color": "yellow", "cell": "center", "size": "medium"},
    {"shape": "square", "color": "blue", "cell": "bottom right", "size": "medium"},
]}
TURNS = ("make the background green", "add a small white triangle at the top right",
         "make it night")
BRANCH = (1, "make the circle purple")  # back to turn 1, then this instruction
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start(data_dir: Path) -> tuple[uvicorn.Server, str]:
    app = create_app(ServeSettings(data_dir=data_dir, image_classifier="none"),
                     lambda: Kontext.load())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def send(page, instruction: str, turn: int) -> None:
    page.locator("#instruction").fill(instruction)
    page.locator("#instruction").press("Enter")
    page.locator(f'#turns li[data-turn="{turn}"]').wait_for()
    page.wait_for_function(
        f"""() => {{ const li = document.querySelector('#turns li[data-turn="{turn}"]');
                     return li && !li.classList.contains('pending'); }}""", timeout=60_000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="okx-shots-") as tmp:
        scene = Path(tmp) / "scene.png"
        to_pil(render(Scene.from_dict(SCENE))).save(scene)
        server, url = start(Path(tmp) / "data")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(30_000)
                page.goto(url)
                page.locator("#upload").set_input_files(str(scene))
                page.locator('#turns li[data-turn="0"]').wait_for()
                for n, instruction in enumerate(TURNS, start=1):
                    send(page, instruction, n)
                parent, instruction = BRANCH
                page.locator(f'#turns li[data-turn="{parent}"] button.turn-select').click()
                send(page, instruction, len(TURNS) + 1)
                page.locator("#compare").fill("50")  # the before/after slider half way
                page.screenshot(path=args.out / "web.png")
                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.goto(page.url)
                phone.locator(f'#turns li[data-turn="{len(TURNS) + 1}"]').wait_for()
                phone.screenshot(path=args.out / "web_phone.png")
                browser.close()
        finally:
            server.should_exit = True
    print(f"wrote {args.out / 'web.png'} and {args.out / 'web_phone.png'}")


if __name__ == "__main__":
    main()
