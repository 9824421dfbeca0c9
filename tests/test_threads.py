"""The thread policy (openkontext.threads): an explicit count wins, then OMP_NUM_THREADS, then
one thread for small models and every physical core for large ones; loading a model sets it.
(Its timings are benchmarks/threads.py's business, not a test's.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from openkontext import threads
from openkontext.model import Flux, LoadedModel
from openkontext.model.presets import get_preset
from openkontext.pipeline import Kontext


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mini() -> LoadedModel:
    """The embedded model's preset (8x8 tokens at 64 px), random weights."""
    return LoadedModel.random("mini-fine", seed=0)


@pytest.fixture(scope="module")
def kontext_dev() -> SimpleNamespace:
    """The 12B FLUX.1 Kontext [dev] transformer's shape, on the meta device (no memory)."""
    preset = get_preset("kontext-dev")
    with torch.device("meta"):
        return SimpleNamespace(preset=preset, flux=Flux(preset.flux))


def test_the_mini_model_is_small_work_and_gets_one_thread(mini):
    assert threads.step_work(mini) == pytest.approx(9.2e6 * 128, rel=0.01)  # 8x8 tokens, twice
    assert threads.step_work(mini, batch=4) == 4 * threads.step_work(mini)
    assert threads.step_work(mini, batch=4) < threads.SMALL_WORK
    assert threads.choose_threads(mini) == threads.choose_threads(mini, batch=4) == 1


def test_kontext_dev_gets_every_physical_core(kontext_dev):
    assert threads.step_work(kontext_dev) == pytest.approx(11.9e9 * 8192, rel=0.01)
    assert threads.choose_threads(kontext_dev) == threads.physical_cores()


def test_physical_cores_are_among_the_cpus_this_process_may_use():
    assert 1 <= threads.physical_cores() <= len(os.sched_getaffinity(0))


def test_an_explicit_count_wins_over_omp_num_threads_and_the_rule(mini, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.apply(2, mini) == 2
    assert torch.get_num_threads() == 2


def test_omp_num_threads_wins_over_the_rule(mini, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.apply(None, mini) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["", "0", "-1", "two", " "])
def test_an_unusable_omp_num_threads_leaves_the_rule(mini, monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    torch.set_num_threads(2)
    assert threads.apply(None, mini) == 1
    assert torch.get_num_threads() == 1


def test_omp_num_threads_of_nested_levels_gives_the_first(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")
    assert threads.env_threads() == 3


@pytest.mark.parametrize("bad", [0, -2])
def test_a_count_below_one_is_refused(mini, bad):
    with pytest.raises(ValueError, match="threads must be at least 1"):
        threads.apply(bad, mini)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Kontext.load("no/such/weights", threads=bad)  # refused before any weights load


def test_loading_sets_the_chosen_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    kontext = Kontext.load("random", device="cpu")
    assert torch.get_num_threads() == threads.choose_threads(kontext.model) == 1
    assert kontext.info()["threads"] == 1
    Kontext.load("random", device="cpu", threads=2)
    assert torch.get_num_threads() == 2


def test_the_cli_option_reaches_torch(scene, tmp_path):
    import torch
    from typer.testing import CliRunner

    from openkontext.cli import app

    before = torch.get_num_threads()
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["edit", str(scene), "x", "--weights", "random", "--steps", "1",
                                "-o", str(tmp_path / "o.png"), "--threads", "2"])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 2
        bad = runner.invoke(app, ["edit", str(scene), "x", "--threads", "0"])
        assert bad.exit_code == 2 and "--threads" in bad.output
    finally:
        torch.set_num_threads(before)
