"""Bad paths, formats and devices on the command line: exit 2 with a message naming the user's
path or option, nothing written, and the model never loaded or run."""

import os
import stat

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from openkontext.cli import EXIT_BAD_INPUT, app
from openkontext.files import atomic_write, check_output_folder, image_outputs
from openkontext.pipeline import Kontext, choose_device

runner = CliRunner()
FAST = ["--weights", "random", "--steps", "1"]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the model is loaded."""
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Kontext, "load", load)
    return calls


@pytest.fixture
def no_run(monkeypatch):
    """Fails the test if the model runs (loading it is allowed)."""
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model ran")

    monkeypatch.setattr(Kontext, "run", run)
    return calls


def _refused(r, *words):
    """Exit 2, every word in the message, and none of a crash's marks."""
    assert r.exit_code == EXIT_BAD_INPUT, r.output
    for word in words:
        assert word in r.output, (word, r.output)
    for mark in ("internal error", "Traceback", ".tmp"):
        assert mark not in r.output, r.output


def _unwritable_folder():
    """A folder even root cannot create files in (sysfs refuses new files)."""
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys here")
    try:
        check_output_folder("/sys")
    except ValueError:
        return "/sys"
    pytest.skip("/sys is writable here")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# -- output files ---------------------------------------------------------------------------


def test_output_in_a_folder_nobody_can_write(scene, no_model):
    folder = _unwritable_folder()
    r = runner.invoke(app, ["edit", str(scene), "x", "-o", f"{folder}/out.png", *FAST])
    _refused(r, f"cannot write {folder}/out.png", f"cannot create files in {folder}")
    assert not os.path.exists(f"{folder}/out.png") and not no_model


def test_output_under_a_regular_file(scene, tmp_path, no_model):
    (tmp_path / "notes.txt").write_text("hi")
    out = tmp_path / "notes.txt" / "out.png"
    r = runner.invoke(app, ["generate", "a red circle", "-o", str(out), *FAST])
    _refused(r, f"cannot write {out}", f"{tmp_path / 'notes.txt'} is a file, not a directory")
    assert not no_model


def test_output_that_is_a_directory(scene, tmp_path, no_model):
    folder = tmp_path / "pictures"
    folder.mkdir()
    r = runner.invoke(app, ["edit", str(scene), "x", "-o", str(folder), *FAST])
    _refused(r, f"{folder} is a directory; give a file name such as {folder / 'out.png'}")
    assert _files(folder) == [] and not no_model


def test_format_that_disagrees_with_the_suffix(scene, tmp_path, no_model):
    out = tmp_path / "x.png"
    r = runner.invoke(app, ["edit", str(scene), "x", "-f", "webp", "-o", str(out), *FAST])
    _refused(r, "--format webp does not match", str(out), str(tmp_path / "x.webp"))
    assert _files(tmp_path) == ["scene.png"] and not no_model


@pytest.mark.parametrize("args", [["-f", "gif"], ["-o", "out.gif"], ["-o", "out.bmp"]])
def test_formats_it_cannot_write_are_refused_before_loading(scene, tmp_path, no_model, args):
    args = [str(tmp_path / a) if a.startswith("out.") else a for a in args]
    r = runner.invoke(app, ["edit", str(scene), "x", *args, *FAST])
    _refused(r)
    assert "gif" in r.output or "bmp" in r.output
    assert _files(tmp_path) == ["scene.png"] and not no_model


def test_the_suffix_picks_the_format_and_a_bare_name_gets_png(scene, tmp_path):
    for name, fmt, expected in [
        ("a.jpg", None, ("a.jpg", "JPEG")),
        ("b", None, ("b.png", "PNG")),
        ("c", "webp", ("c.webp", "WEBP")),
        ("d.JPEG", "jpg", ("d.JPEG", "JPEG")),
    ]:
        args = ["-o", str(tmp_path / name)] + (["-f", fmt] if fmt else [])
        r = runner.invoke(app, ["edit", str(scene), "x", *args, *FAST])
        assert r.exit_code == 0, r.output
        assert f"wrote {tmp_path / expected[0]}" in r.output
        with Image.open(tmp_path / expected[0]) as im:
            assert im.format == expected[1]


def test_numbered_names_for_several_images():
    paths, fmt = image_outputs("shots/out", None, ("png", "jpeg", "webp"), count=3)
    assert [str(p) for p in paths] == ["shots/out_1.png", "shots/out_2.png", "shots/out_3.png"]
    assert fmt == "png"


def test_files_follow_the_umask(scene, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out.png"
        r = runner.invoke(app, ["edit", str(scene), "x", "-o", str(out), *FAST])
        assert r.exit_code == 0, r.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o027)
        assert stat.S_IMODE(atomic_write(tmp_path / "a", b"1").stat().st_mode) == 0o640
        assert stat.S_IMODE(atomic_write(tmp_path / "b", b"1", mode=0o600).stat().st_mode) == 0o600
    finally:
        os.umask(old)


# -- input files ----------------------------------------------------------------------------


def test_missing_or_directory_inputs(scene, tmp_path, no_model):
    missing = tmp_path / "nope.png"
    r = runner.invoke(app, ["edit", str(missing), "x", *FAST])
    _refused(r, f"{missing} does not exist")
    r = runner.invoke(app, ["edit", str(tmp_path), "x", *FAST])
    _refused(r, f"{tmp_path} is a directory, not a file")
    r = runner.invoke(app, ["edit", str(scene), "x", "--reference", str(missing), *FAST])
    _refused(r, f"{missing} does not exist")
    r = runner.invoke(app, ["chat", str(missing), *FAST], input="/quit\n")
    _refused(r, f"{missing} does not exist")
    assert _files(tmp_path) == ["scene.png"] and not no_model


# -- devices --------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(scene, tmp_path, no_run):
    out = tmp_path / "out.png"
    r = runner.invoke(app, ["edit", str(scene), "x", "-o", str(out), "--device", "cuda", *FAST])
    _refused(r, "CUDA is not available on this machine", "use --device cpu")
    assert not out.exists() and not no_run
    r = runner.invoke(app, ["info", "--device", "cuda:1", "--weights", "random"])
    _refused(r, "CUDA is not available")


def test_devices_torch_does_not_know(scene, tmp_path, no_run):
    for device in ("banana", "cuda:x", "meta"):
        r = runner.invoke(app, ["edit", str(scene), "x", "--device", device, *FAST])
        _refused(r, repr(device), "use cpu, cuda, cuda:N or mps")
    assert _files(tmp_path) == ["scene.png"] and not no_run


def test_choose_device_says_why():
    assert choose_device("cpu") == torch.device("cpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available on this machine"):
            choose_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine"):
            choose_device("cuda:0")


# -- chat, demo -----------------------------------------------------------------------------


def test_chat_and_demo_folders_are_checked_first(scene, tmp_path, no_model):
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    r = runner.invoke(app, ["chat", str(scene), "--output-dir", str(notes), *FAST], input="")
    _refused(r, f"{notes} is a file, not a directory")
    r = runner.invoke(app, ["chat", str(scene), "--save", str(notes / "s"), *FAST], input="")
    _refused(r, f"cannot write {notes / 's'}")
    r = runner.invoke(app, ["demo", "--out", str(notes), "--weights", "random"])
    _refused(r, f"{notes} is a file, not a directory")
    assert not no_model


def test_chat_save_to_a_bad_folder_keeps_the_session(scene, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    lines = f"/save {notes}\n/save {tmp_path / 'kept'}\n/quit\n"
    r = runner.invoke(app, ["chat", str(scene), "--output-dir", str(tmp_path / "turns"), *FAST],
                      input=lines)
    assert r.exit_code == 0, r.output
    assert f"{notes} is a file, not a directory" in r.output
    assert (tmp_path / "kept" / "session.json").exists()
