"""`--lora PATH[:STRENGTH]` on the CLI, with random mini weights and kohya-convention LoRA files
written for them; and the Python API giving the same bytes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lora_files import write_lora
from openkontext.cli import EXIT_BAD_INPUT, app
from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext

runner = CliRunner()
PROMPT = "make the circle blue"
FAST = ["--weights", "random", "--seed", "1", "--steps", "2"]


@pytest.fixture(scope="module")
def mini() -> LoadedModel:
    return LoadedModel.random("mini")  # what --weights random loads


@pytest.fixture
def loras(tmp_path, mini):
    """A and B: LoRAs that fit the mini model; WIDE: one made for a wider model."""
    layers = ["double_blocks.1.img_attn.qkv", "single_blocks.2.linear1"]
    return {
        "A": write_lora(tmp_path / "A.safetensors", mini.flux, seed=1),
        "B": write_lora(tmp_path / "B.safetensors", mini.flux, layers, rank=2, seed=2),
        "WIDE": write_lora(tmp_path / "WIDE.safetensors", mini.flux, layers,
                           wrong_in={"single_blocks.2.linear1"}),
    }


def _edit(scene, out, *lora_options: str, command: str = "edit") -> bytes:
    args = [str(scene), PROMPT] if command == "edit" else [PROMPT]
    options = [x for value in lora_options for x in ("--lora", value)]
    r = runner.invoke(app, [command, *args, *FAST, *options, "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out.read_bytes()


def test_a_lora_changes_the_edit_by_its_strength(scene, tmp_path, loras):
    a = str(loras["A"])
    plain = _edit(scene, tmp_path / "plain.png")
    with_a = _edit(scene, tmp_path / "a.png", a)
    assert with_a != plain
    assert _edit(scene, tmp_path / "a0.png", f"{a}:0") == plain
    assert _edit(scene, tmp_path / "a1.png", f"{a}:1") == with_a
    half = _edit(scene, tmp_path / "a05.png", f"{a}:0.5")
    assert half not in (plain, with_a)
    both = _edit(scene, tmp_path / "ab.png", a, f"{loras['B']}:-0.5")
    assert both not in (plain, with_a, half)
    # After the LoRA runs, the model is as it was.
    assert _edit(scene, tmp_path / "plain2.png") == plain


def test_generate_takes_loras_too(tmp_path, loras):
    plain = _edit(None, tmp_path / "g.png", command="generate")
    assert _edit(None, tmp_path / "ga.png", str(loras["A"]), command="generate") != plain


def test_the_python_api_gives_the_cli_bytes(scene, tmp_path, loras):
    cli = _edit(scene, tmp_path / "a.png", f"{loras['A']}:0.75")
    result = Kontext(LoadedModel.random("mini")).edit(scene, PROMPT, seed=1, steps=2,
                                                      loras=[(str(loras["A"]), 0.75)])
    assert result.encode("png")[0] == cli


@pytest.mark.parametrize("value, message", [
    ("missing.safetensors", "no such file"),
    ("notes.txt", "expected a .safetensors file"),
    ("A.safetensors:lots", "the strength after ':' must be a number from -4 to 4"),
    ("A.safetensors:9", "the strength after ':' must be a number from -4 to 4"),
    ("WIDE.safetensors", "does not fit single_blocks.2.linear1"),
])
def test_bad_loras_exit_2_with_a_message_and_no_output(scene, tmp_path, loras, value, message):
    (tmp_path / "notes.txt").write_text("not a LoRA")
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["edit", str(scene), PROMPT, *FAST, "--lora", str(tmp_path / value),
                            "-o", str(out)])
    assert r.exit_code == EXIT_BAD_INPUT, r.output
    assert message in r.output
    assert not out.exists()


def test_at_most_four_loras(scene, tmp_path, loras):
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["edit", str(scene), PROMPT, *FAST, "-o", str(out),
                            *[x for _ in range(5) for x in ("--lora", str(loras["A"]))]])
    assert r.exit_code == EXIT_BAD_INPUT and "at most 4 LoRAs" in r.output
    assert not out.exists()
