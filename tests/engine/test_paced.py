"""The paced engine (engine/paced.py): the engine contract at a set rate, with no model behind it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from engine.loader import load_model
from engine.paced import PacedEngine
from engine.preflight import Machine, PreflightError, ProfileSpec, paced_rate
from engine.startup import check_profile
from engine.types import GenerationRequest
from tests.support.engine_runs import run_all

HELLO = ({"role": "user", "content": "hello"},)


@pytest.fixture(scope="module")
def paced() -> Iterator[PacedEngine]:
    engine = PacedEngine(200, "latency_first", max_batch=8)
    yield engine
    engine.shutdown()


def test_a_request_runs_to_max_tokens_at_the_rate_tagged_as_the_paced_engine(paced: PacedEngine) -> None:
    started = time.perf_counter()
    result = paced.submit(GenerationRequest(messages=HELLO, max_tokens=20)).result(timeout=10)
    assert time.perf_counter() - started >= 0.09  # 20 tokens at 200 per second: 0.1 s
    assert (result.finish_reason, result.completion_tokens, result.error) == ("length", 20, None)
    assert result.content and "The paced engine writes this sentence".startswith(result.content)
    assert result.prompt_tokens > 0 and result.harmony_ok
    assert len(result.token_times) == 20 and result.token_times == sorted(result.token_times)
    assert paced.tags.as_dict() == {
        "engine": "paced",
        "model_id": "paced-200tps",
        "model_size": "none",
        "gpu_mode": "none",
        "profile": "latency_first",
    }


def test_eight_concurrent_requests_share_the_steps(paced: PacedEngine) -> None:
    started = time.perf_counter()
    results = run_all(paced, [GenerationRequest(messages=HELLO, max_tokens=20) for _ in range(8)], 10)
    elapsed = time.perf_counter() - started
    assert [r.completion_tokens for r in results] == [20] * 8
    assert elapsed >= 0.09  # 20 tokens at 200 per second
    # One at a time, each would write its first token after the one before had written its last.
    assert max(r.token_times[0] for r in results) < min(r.token_times[-1] for r in results)


def test_a_stop_string_ends_the_answer_before_it(paced: PacedEngine) -> None:
    request = GenerationRequest(messages=HELLO, max_tokens=200, stop=("sentence",))
    result = paced.submit(request).result(timeout=10)
    assert (result.finish_reason, result.content) == ("stop", "The paced engine writes this ")
    assert result.completion_tokens < 200


def test_a_cancelled_request_keeps_what_it_wrote(paced: PacedEngine) -> None:
    handle = paced.submit(GenerationRequest(messages=HELLO, max_tokens=2000))
    time.sleep(0.1)
    handle.cancel()
    result = handle.result(timeout=10)
    assert result.finish_reason == "cancelled" and 0 < result.completion_tokens < 2000
    assert paced.load() == {"running": 0, "waiting": 0}


def test_requests_beyond_max_batch_wait_for_a_free_slot() -> None:
    engine = PacedEngine(1000, "latency_first", max_batch=2)
    try:
        results = run_all(engine, [GenerationRequest(messages=HELLO, max_tokens=50) for _ in range(4)], 10)
    finally:
        engine.shutdown()
    assert sorted(r.e2e_s for r in results)[-1] >= 0.095  # two rounds of 50 steps of 1 ms
    assert not engine.is_running()


@pytest.mark.parametrize("model", ["paced:abc", "paced:0", "paced:-5", "paced:", "paced:inf", "paced:nan"])
def test_a_bad_rate_is_refused_naming_the_profile_and_its_model(model: str) -> None:
    with pytest.raises(ValueError):
        paced_rate(model)
    with pytest.raises(PreflightError) as refused:
        check_profile(ProfileSpec("bench", model, "tensor", 8, 64), Machine(gpu_free_bytes=(1,)))
    assert str(refused.value).startswith(
        f'profiles.toml [profiles.bench] model = "{model}": the paced engine'
    )


def test_the_start_check_passes_a_paced_profile_without_gpus_or_weights() -> None:
    plan = check_profile(ProfileSpec("bench", "paced:2.5", "tensor", 8, 64, allow_demo=False))
    assert (plan.source, plan.gpu_mode, plan.demo_fallback) == ("paced:2.5", "none", False)
    assert paced_rate("paced:2.5") == 2.5


def test_the_loader_never_serves_the_demo_for_a_paced_model() -> None:
    with pytest.raises(ValueError, match="paced engine"):
        load_model("paced:200", allow_demo_fallback=True)
