"""A sample of the hostile-image corpus (tests/hostile_images.py) posted to a real server as
`input_image`: what the corpus refuses is a 422 naming the field, with the corpus's phrase in
the message; what it accepts is a 200 whose job then runs (the worker decodes the stored bytes
again, with the same EXIF orientation)."""

from __future__ import annotations

from hostile_images import corpus

SAMPLE = (
    "bomb/png 100000x100000",
    "bomb/jpeg 1000 empty progressive scans",
    "bomb/png zTXt",
    "truncated/jpeg without EOI",
    "polyglot/gif header that is javascript",
    "polyglot/png then zip",
    "mode/png 16-bit grey (I;16)",
    "animation/webp",
    "size/png 10000x1",
    "exif/jpeg orientation 6",
    "data-url/text/html",
    "data-url/image/png holding a jpeg",
    "base64/non-ASCII letter",
    "base64/url-safe and standard mixed",
    "junk/4 KB of NUL",
)


def test_sampled_cases_are_refused_or_run(serve):
    live = serve()
    cases = {c.name: c for c in corpus()}
    jobs = {}
    for name in SAMPLE:
        case = cases[name]
        r = live.submit({"prompt": "make it blue", "input_image": case.text, "steps": 1})
        if case.refused is not None:
            assert r.status_code == 422, (name, r.text)
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["body", "input_image"], name
            assert case.refused in problem["msg"], (name, problem["msg"])
        else:
            assert r.status_code == 200, (name, r.text)
            jobs[name] = r.json()["polling_url"]
    for name, polling_url in jobs.items():
        body = live.wait(polling_url)
        assert body["status"] == "Ready", (name, body)
    rotated = live.wait(jobs["exif/jpeg orientation 6"])["result"]
    assert rotated["width"] > rotated["height"]  # stored 32x48, upright 48x32
