"""safety_tolerance: the built-in text policy, the image classifier and upsampler plug-ins."""

from __future__ import annotations

from openkontext.serve.moderation import TextPolicy, Verdict, load_plugin


def test_text_policy_is_stricter_at_lower_tolerance():
    policy = TextPolicy()
    assert policy.check("a bloody nose", 0).flagged
    assert not policy.check("a bloody nose", 1).flagged
    assert policy.check("GORE everywhere", 2).flagged
    assert not policy.check("GORE everywhere", 3).flagged
    assert policy.check("a nude statue", 4).flagged
    assert not policy.check("a nude statue", 5).flagged
    assert policy.check("csam", 6).flagged
    assert "never allowed" in policy.check("csam", 6).reason
    assert not policy.check("bloodhound on a gorey-free lawn", 0).flagged  # whole words only
    assert not policy.check("make the sky blue", 0).flagged


def test_load_plugin():
    assert load_plugin(None) is None
    assert load_plugin("openkontext.serve.moderation:TextPolicy").check("x", 0) == Verdict(False)


def test_request_moderated(serve):
    live = serve()
    r = live.submit({"prompt": "add gore to the scene", "safety_tolerance": 2})
    assert r.status_code == 200
    body = live.client.get(r.json()["polling_url"]).json()
    assert body["status"] == "Request Moderated" and body["result"] is None
    assert "'gore'" in body["details"]["reason"]
    allowed = live.submit({"prompt": "add gore to the scene", "safety_tolerance": 6,
                           "steps": 1})
    assert live.wait(allowed.json()["polling_url"])["status"] == "Ready"


def test_content_moderated_by_an_image_classifier(serve):
    seen = []

    def classifier(images, tolerance):
        seen.append((len(images), images[0].size, tolerance))
        return Verdict(tolerance < 4, "too red")

    live = serve(image_classifier=classifier)
    flagged = live.wait(live.submit({"prompt": "x", "steps": 1, "num_images": 2,
                                     "safety_tolerance": 1}).json()["polling_url"])
    assert flagged["status"] == "Content Moderated"
    assert flagged["details"] == {"reason": "too red"} and flagged["result"] is None
    passed = live.wait(live.submit({"prompt": "x", "steps": 1,
                                    "safety_tolerance": 5}).json()["polling_url"])
    assert passed["status"] == "Ready"
    assert seen == [(2, (64, 64), 1), (1, (64, 64), 5)]


def test_prompt_upsampling_plugin(serve):
    def upsampler(prompt, images):
        return f"{prompt}, highly detailed ({len(images)} inputs)"

    live = serve(prompt_upsampler=upsampler)
    body = live.wait(live.submit({"prompt": "a cat", "steps": 1,
                                  "prompt_upsampling": True}).json()["polling_url"])
    assert body["result"]["prompt"] == "a cat, highly detailed (0 inputs)"
    plain = live.wait(live.submit({"prompt": "a cat", "steps": 1}).json()["polling_url"])
    assert plain["result"]["prompt"] == "a cat"
