"""bf16 autocast is the training default only on CPUs that multiply bf16 in hardware."""

import pytest
import torch

from openkontext.train.autoencoder import AETrainConfig, DecoderTrainConfig
from openkontext.train.common import native_bf16
from openkontext.train.transformer import FlowTrainConfig


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({"avx2": True, "amx_bf16": False, "avx512_bf16": False}, False),  # AMD EPYC here
        ({"avx2": True, "amx_bf16": True, "avx512_bf16": True}, True),  # Sapphire Rapids
        ({"avx2": True, "avx512_bf16": True}, True),
        ({}, False),
    ],
)
def test_bf16_autocast_only_with_bf16_hardware(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert native_bf16() is expected
    for config in (AETrainConfig(), DecoderTrainConfig(), FlowTrainConfig()):
        assert config.autocast_bf16 is expected
