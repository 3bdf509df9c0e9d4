"""An MXFP4 gpt-oss checkpoint loads without the `kernels` package and without any network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.preflight import Machine, ProfileSpec
from engine.startup import check_profile, load_profile_model
from tests.support.checkpoints import dequantize_reference, load_weights, save_tiny_mxfp4_gptoss


@pytest.fixture(scope="module")
def tiny_mxfp4_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_mxfp4_gptoss(tmp_path_factory.mktemp("mxfp4") / "tiny-mxfp4")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """HF_HUB_OFFLINE=1 as the engine process sets it; every socket connection recorded and refused."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError(f"no network in this test: connect to {address}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_the_tiny_checkpoint_is_stored_as_mxfp4(tiny_mxfp4_dir: Path) -> None:
    names = load_weights(tiny_mxfp4_dir).keys()
    assert "model.layers.0.mlp.experts.gate_up_proj_blocks" in names
    assert "model.layers.0.mlp.experts.down_proj_scales" in names
    assert not [name for name in names if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]


def test_mxfp4_without_kernels_is_dequantized_offline_with_the_stored_values(
    tiny_mxfp4_dir: Path, no_network: list[Any]
) -> None:
    spec = ProfileSpec("latency_first", str(tiny_mxfp4_dir), "pipeline", max_batch=4, max_tokens=16)
    assert check_profile(spec, Machine()).mxfp4_packed is False
    loaded = load_profile_model(spec, cache_dir=None, machine=Machine())
    assert no_network == []
    assert loaded.is_harmony and not loaded.is_demo and loaded.gpu_mode == "cpu"
    stored = load_weights(tiny_mxfp4_dir)
    for layer, block in enumerate(loaded.model.model.layers):
        for proj in ("gate_up_proj", "down_proj"):
            key = f"model.layers.{layer}.mlp.experts.{proj}"
            expected = dequantize_reference(stored[f"{key}_blocks"], stored[f"{key}_scales"])
            torch.testing.assert_close(getattr(block.mlp.experts, proj).detach(), expected, rtol=0, atol=0)
    logits = loaded.model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_asking_for_packed_mxfp4_on_a_cpu_still_dequantizes(
    tiny_mxfp4_dir: Path, no_network: list[Any]
) -> None:
    from engine.loader import load_model

    loaded = load_model(str(tiny_mxfp4_dir), allow_demo_fallback=False, mxfp4_packed=True)
    assert no_network == []
    assert (
        type(loaded.model.model.layers[0].mlp.experts).__name__ == "GptOssExperts"
    )  # not Mxfp4GptOssExperts
