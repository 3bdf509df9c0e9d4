"""The engine on a tiny random-weight gpt-oss model: batching, sampling, cancel, stop, harmony."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from engine.engine import Engine
from engine.harmony import special_token_names
from engine.prompt import render_prompt
from engine.request_stream import RequestStream
from engine.tiny import build_tiny_gptoss
from engine.types import GenerationRequest, GenerationResult, ModelTags, TokenDelta
from tests.support.engine_runs import run_all
from tests.support.paths import REPO_ROOT

TAGS = ModelTags("transformers-cb", "tiny-gptoss", "0.2m", "cpu", "latency_first")


def ask(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    model, tokenizer = build_tiny_gptoss()
    model.set_attn_implementation("eager")
    # GPTOSS_TEST_DEVICE=cuda runs these engine tests on a GPU (bench/device_check.py's machine).
    return model.to(os.environ.get("GPTOSS_TEST_DEVICE", "cpu")), tokenizer


@pytest.fixture(scope="module")
def reference_text(tiny: tuple[object, object]) -> str:
    """Plain `model.generate` output for one prompt, computed before any engine touches the model."""
    model, tokenizer = tiny
    ids = render_prompt(tokenizer, True, ask("reference prompt"))
    out = model.generate(
        torch.tensor([ids], device=model.device), max_new_tokens=24, do_sample=False, eos_token_id=None
    )  # type: ignore[attr-defined]
    return str(tokenizer.decode(out[0][len(ids) :]))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def engine(tiny: tuple[object, object], reference_text: str) -> Iterator[Engine]:
    model, tokenizer = tiny
    eng = Engine(model, tokenizer, TAGS, is_harmony=True, max_batch=8)
    yield eng
    eng.shutdown()


def test_eight_threads_share_the_batch_and_get_exact_token_counts(engine: Engine) -> None:
    requests = [ask(f"job {i} " * (i + 1), max_tokens=10 + 7 * i, ignore_eos=True) for i in range(8)]
    results = run_all(engine, requests)
    for request, result in zip(requests, results, strict=True):
        assert result.finish_reason == "length"
        assert result.completion_tokens == request.max_tokens
        assert len(result.token_times) == request.max_tokens
        assert result.prompt_tokens == engine.prompt_tokens(request)
        assert result.ttft_s is not None and 0 <= result.ttft_s <= result.e2e_s


def test_greedy_output_is_the_same_alone_in_a_batch_and_as_plain_generate(
    engine: Engine, reference_text: str
) -> None:
    target = ask("reference prompt", max_tokens=24, ignore_eos=True)
    alone = engine.submit(target).result(timeout=60)
    others = [ask(f"noise {i} " * (3 * i + 1), max_tokens=40, ignore_eos=True) for i in range(7)]
    batched = run_all(engine, [*others[:3], target, *others[3:]])[3]
    assert alone.reasoning + alone.content == reference_text
    assert batched.reasoning == alone.reasoning and batched.content == alone.content


def test_seeded_sampling_is_reproducible_inside_a_batch(engine: Engine) -> None:
    seeded = ask("tell me a story", max_tokens=20, temperature=3.0, seed=7, ignore_eos=True)
    alone = engine.submit(seeded).result(timeout=60).reasoning
    crowd = [ask(f"crowd {i}", max_tokens=30, temperature=3.0, ignore_eos=True) for i in range(5)]
    batched = run_all(engine, [*crowd, seeded])[-1].reasoning
    other_seeds = {
        engine.submit(ask("tell me a story", max_tokens=20, temperature=3.0, seed=s, ignore_eos=True))
        .result(timeout=60)
        .reasoning
        for s in (1, 2, 3)
    }
    assert batched == alone
    assert len(other_seeds | {alone}) > 1


def test_cancel_stops_a_running_request_within_a_few_steps_and_keeps_partial_output(engine: Engine) -> None:
    handle = engine.submit(ask("a very long answer please", max_tokens=3000, ignore_eos=True))
    tokens_at_cancel = 0
    result = None
    for event in handle.events(timeout=60):
        if isinstance(event, TokenDelta) and tokens_at_cancel == 0 and event.completion_tokens >= 5:
            tokens_at_cancel = event.completion_tokens
            handle.cancel()
        if isinstance(event, GenerationResult):
            result = event
    assert result is not None and result.finish_reason == "cancelled"
    assert tokens_at_cancel <= result.completion_tokens <= tokens_at_cancel + 8
    assert result.reasoning  # the random model's partial text is kept (as non-final text)


def test_max_tokens_ends_with_length_and_eos_ends_with_stop(engine: Engine) -> None:
    short = engine.submit(ask("hi", max_tokens=3, ignore_eos=True)).result(timeout=60)
    assert (short.finish_reason, short.completion_tokens) == ("length", 3)
    # With this seed the tiny model emits <|return|> early for this prompt.
    natural = engine.submit(ask("hi there", max_tokens=200, reasoning_effort="low")).result(timeout=60)
    assert natural.finish_reason == "stop" and natural.completion_tokens < 200


def test_random_gptoss_output_never_reaches_content(engine: Engine) -> None:
    result = engine.submit(ask("anything", max_tokens=30, ignore_eos=True)).result(timeout=60)
    assert result.content == ""
    assert result.reasoning and not result.harmony_ok


def test_engine_rejects_prompt_beyond_context(engine: Engine) -> None:
    with pytest.raises(ValueError, match="context"):
        engine.submit(ask("x", max_tokens=engine.max_context))


# -- the per-request stream on crafted harmony token sequences --------------------------------


def stream_tokens(
    tokenizer: object, text: str, stop: tuple[str, ...] = ()
) -> tuple[list[TokenDelta], GenerationResult]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    specials = special_token_names(tokenizer)
    stream = RequestStream("r", ask("q", stop=stop), tokenizer, specials, 10, {257}, 0.0)
    deltas = []
    for n in range(1, len(ids) + 1):
        delta = stream.on_output(ids[:n], None)
        if delta is not None:
            deltas.append(delta)
        if stream.stopped_by_string:
            break
    tail, result = stream.finish(None)
    return deltas + ([tail] if tail else []), result


def test_harmony_channels_split_token_by_token(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    text = (
        "<|channel|>analysis<|message|>SECRET plan: say four.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The answer is 4.<|return|>"
    )
    deltas, result = stream_tokens(tokenizer, text)
    assert all("SECRET" not in d.content for d in deltas)
    assert "".join(d.content for d in deltas) == result.content == "The answer is 4."
    assert result.reasoning == "SECRET plan: say four."
    assert result.harmony_ok and result.finish_reason == "stop"


def test_truncated_harmony_has_empty_content(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    _, result = stream_tokens(tokenizer, "<|channel|>analysis<|message|>Still thinking about")
    assert result.content == "" and result.reasoning == "Still thinking about"
    assert result.finish_reason == "length"


def test_stop_string_cuts_the_answer_and_is_never_streamed(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    text = "<|channel|>final<|message|>one, two, three, four<|return|>"
    deltas, result = stream_tokens(tokenizer, text, stop=(", thr",))
    assert result.content == "one, two"
    assert "".join(d.content for d in deltas) == "one, two"
    assert result.finish_reason == "stop"


def test_multibyte_characters_are_not_split_across_deltas(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    deltas, result = stream_tokens(tokenizer, "<|channel|>final<|message|>Größe: 東京 ✓<|return|>")
    assert result.content == "Größe: 東京 ✓"
    assert all("\ufffd" not in d.content for d in deltas)


# -- a tiny gpt-oss that really speaks harmony (tests/fixtures/make_harmony_tiny.py) -------------


@pytest.fixture(scope="module")
def harmony_engine() -> Iterator[Engine]:
    from engine.loader import load_model

    loaded = load_model(
        str(REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"), allow_demo_fallback=False
    )
    eng = Engine.from_loaded(loaded, profile="quality_first", max_batch=4)
    yield eng
    eng.shutdown()


def test_real_harmony_output_splits_into_reasoning_and_content(harmony_engine: Engine) -> None:
    handle = harmony_engine.submit(ask("What is the capital of France?", max_tokens=100))
    events = list(handle.events(timeout=60))
    result = events[-1]
    assert isinstance(result, GenerationResult)
    assert (result.content, result.reasoning) == ("Hello, friend!", "Greet back.")
    assert result.harmony_ok and result.finish_reason == "stop"
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    assert "".join(d.content for d in deltas) == "Hello, friend!"
    assert all("Greet" not in d.content for d in deltas)


def test_stop_string_in_the_answer_ends_the_request_early(harmony_engine: Engine) -> None:
    result = harmony_engine.submit(ask("hi", max_tokens=100, stop=(", fr",))).result(timeout=60)
    assert (result.content, result.finish_reason) == ("Hello", "stop")
    truncated = harmony_engine.submit(ask("hi", max_tokens=8)).result(timeout=60)
    assert (truncated.content, truncated.finish_reason) == ("", "length")


def test_nul_bytes_from_the_model_become_replacement_characters(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    _, result = stream_tokens(tokenizer, "<|channel|>final<|message|>a\x00b<|return|>")
    assert result.content == "a\ufffdb"
