"""The web page's files: served at / and /web/ with the right types, from the package, and
nothing else of the package (the browser tests in tests/web/ drive the page itself)."""

from __future__ import annotations

import re


def test_the_page_and_its_modules_are_served(serve):
    live = serve()
    page = live.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))
    scripts = re.findall(r'src="([^"]+\.js)"', page.text)
    assert scripts
    for path in scripts:
        r = live.client.get(path)
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], path
        for module in re.findall(r'from "\./([\w-]+\.js)"', r.text):
            m = live.client.get(f"/web/{module}")
            assert m.status_code == 200 and "javascript" in m.headers["content-type"], module
    css = re.findall(r'href="([^"]+\.css)"', page.text)
    assert css and live.client.get(css[0]).headers["content-type"].startswith("text/css")


def test_only_the_pages_files_are_reachable(serve):
    live = serve()
    for path in ("/web/../webpage.py", "/web/%2e%2e/webpage.py", "/web/..%2fapp.py",
                 "/web/nothing.js", "/web/"):
        assert live.client.get(path).status_code == 404, path
