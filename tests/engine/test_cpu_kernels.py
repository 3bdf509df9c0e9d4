"""The CPU fast paths: the transposed nn.Linear layout and per-request attention in the batch."""

from __future__ import annotations

import pytest
import torch

from engine.cpu.attention import NAME as CPU_ATTENTION
from engine.cpu.linear import choose_cpu_linear, transposed_linear
from engine.cpu.threads import in_short_lived_thread
from engine.engine import CacheSizing, Engine
from engine.prompt import render_prompt
from engine.tiny import build_harmony_tokenizer
from engine.types import GenerationRequest, ModelTags

TAGS = ModelTags("transformers-cb", "tiny-llama", "1m", "cpu", "latency_first")


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (5, 24), (1, 3, 24), (2, 7, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_transposed_linear_computes_the_same_product(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape[:-1], 48)[..., ::2]  # a strided input, as attention outputs often are
    expected = layer(x)
    got = transposed_linear(layer, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_layout_is_installed_and_removed_on_the_models_linears() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    assert choose_cpu_linear(model, "transposed").layout == "transposed"
    assert all("forward" in vars(m) for m in model if isinstance(m, torch.nn.Linear))
    choose_cpu_linear(model, "stock")
    assert not any("forward" in vars(m) for m in model)
    chosen = choose_cpu_linear(model, "auto")  # measured on this machine: either is right
    assert chosen.layout in {"stock", "transposed"} and chosen.stock_ms is not None
    with pytest.raises(ValueError, match="GPTOSS_CPU_LINEAR"):
        choose_cpu_linear(model, "fastest")


def test_errors_of_a_short_lived_thread_reach_the_caller() -> None:
    assert in_short_lived_thread(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        in_short_lived_thread(lambda: 1 / 0)


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[object, object]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_harmony_tokenizer()
    # Not gpt-oss, so the engine renders its chats with a chat template: a plain one.
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # clear greedy winners, so float rounding cannot flip a token
    model.set_attn_implementation("sdpa")
    return model, tokenizer


def count_direct_decodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the attention calls that took the decode path straight from the cache, and the others."""
    import engine.cpu.attention as attention

    counts = {"direct": 0, "general": 0}
    direct = attention._decode_from_cache

    def counting(*args: object, **kwargs: object) -> object:
        out = direct(*args, **kwargs)
        counts["general" if out is None else "direct"] += 1
        return out

    monkeypatch.setattr(attention, "_decode_from_cache", counting)
    return counts


def test_batched_requests_with_per_request_attention_match_plain_generate(
    tiny_llama: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny_llama
    paths = count_direct_decodes(monkeypatch)
    prompts = [f"prompt {i}: " + "words " * (3 * i + 1) for i in range(5)]
    requests = [
        GenerationRequest(messages=({"role": "user", "content": p},), max_tokens=12, ignore_eos=True)
        for p in prompts
    ]
    # 48 tokens per step: the longer prompts are prefilled in chunks, next to other requests' decodes.
    engine = Engine(model, tokenizer, TAGS, is_harmony=False, max_batch=8, sizing=CacheSizing(16, 64, 48))
    try:
        assert engine.cpu_attention and model.config._attn_implementation == CPU_ATTENTION
        expected = []
        for request in requests:
            ids = torch.tensor([engine.render_prompt(request)])
            out = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
            expected.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
        handles = [engine.submit(request) for request in requests]
        results = [handle.result(timeout=60) for handle in handles]
    finally:
        engine.shutdown()
    assert model.config._attn_implementation == "sdpa"  # shutdown switched it back
    assert [r.content for r in results] == expected
    # Steps with only decodes read their keys straight from the cache; steps with a prompt chunk do not.
    assert paths["direct"] > 0 and paths["general"] > 0, paths


class FullAttentionCacheAllocator:
    """Stands in for transformers' allocator of full-attention layers (the class name is what is checked):
    one layer's keys and values, a token per row, at slots the read index names."""

    index, layer_type = 0, 0

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
        self._kv_token_views = {0: (k_cache, v_cache)}


# Keys with the cache per decoding request: one alone (its keys are a slice of the read index), and three
# (a padded layout); the slots are scattered over the cache, as pages are.
@pytest.mark.parametrize("key_lengths", [[7], [7, 3, 10]])
def test_decodes_read_each_requests_keys_from_its_slots_in_the_cache(key_lengths: list) -> None:
    from engine.cpu.attention import _decode_from_cache

    torch.manual_seed(0)
    heads, kv_heads, dim, slots_in_cache = 4, 2, 8, 64
    k_cache, v_cache = torch.randn(slots_in_cache, kv_heads, dim), torch.randn(slots_in_cache, kv_heads, dim)
    requests = len(key_lengths)
    read_index = torch.randperm(slots_in_cache)[: sum(key_lengths)]  # each request's slots, packed
    starts_k = [0, *torch.tensor(key_lengths).cumsum(0).tolist()]
    write_index = read_index[torch.tensor(starts_k[1:]) - 1]  # each new token is its request's last key
    query = torch.randn(1, heads, requests, dim)
    key, value = torch.randn(1, kv_heads, requests, dim), torch.randn(1, kv_heads, requests, dim)
    cache = type("Cache", (), {"layer_to_allocator": {0: FullAttentionCacheAllocator(k_cache, v_cache)}})()
    kwargs = {
        "read_index": [read_index],
        "write_index": [write_index],
        "cu_seq_lens_k": [torch.tensor(starts_k)],
    }
    got = _decode_from_cache(0, query, key, value, list(range(requests + 1)), 0.5, None, cache, kwargs)
    assert got is not None  # the direct path took it
    # Reference: the new keys written at their slots, then each query over its own request's slots.
    keys, values = k_cache.clone(), v_cache.clone()
    keys[write_index], values[write_index] = key[0].transpose(0, 1), value[0].transpose(0, 1)
    for i in range(requests):
        own = read_index[starts_k[i] : starts_k[i + 1]]
        k = keys[own].transpose(0, 1).repeat_interleave(heads // kv_heads, dim=0)  # [heads, keys, dim]
        v = values[own].transpose(0, 1).repeat_interleave(heads // kv_heads, dim=0)
        q = query[0, :, i : i + 1]  # [heads, 1, dim]
        expected = ((q @ k.transpose(-1, -2)) * 0.5).softmax(-1) @ v  # [heads, 1, dim]
        torch.testing.assert_close(got[0, i], expected[:, 0], rtol=1e-5, atol=1e-5)


class PackedCache:
    """Stands in for transformers' PagedAttentionCache: hands back each request's whole keys/values."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, starts_k: list[int]) -> None:
        self.key, self.value, self.starts_k = key, value, starts_k

    def update(self, key_states: object, value_states: object, layer_idx: int, kwargs: dict) -> tuple:
        kwargs["cu_seq_lens_k"] = torch.tensor(self.starts_k, dtype=torch.int32)
        return self.key, self.value


def packed_batch(lengths: list, heads: int, kv_heads: int, dim: int = 8) -> tuple:
    """Random packed queries and keys/values for (new tokens, tokens with the cache) per request:
    (query starts, key starts, query [1, heads, q, dim], key and value [1, kv_heads, k, dim])."""
    torch.manual_seed(0)
    starts_q, starts_k = [0], [0]
    for q_len, k_len in lengths:
        starts_q.append(starts_q[-1] + q_len)
        starts_k.append(starts_k[-1] + k_len)
    query = torch.randn(1, heads, starts_q[-1], dim)
    key, value = torch.randn(1, kv_heads, starts_k[-1], dim), torch.randn(1, kv_heads, starts_k[-1], dim)
    return starts_q, starts_k, query, key, value


# (new tokens, tokens with the cache) per request: decodes (together, or one alone), a prefill, a chunk.
@pytest.mark.parametrize(
    "lengths",
    [[(1, 9), (5, 5), (3, 11), (1, 4), (1, 7)], [(1, 9), (5, 5), (3, 11)], [(1, 3), (1, 12)], [(1, 6)]],
)
def test_per_request_attention_equals_masked_attention_over_the_packed_batch(lengths: list) -> None:
    from engine.cpu.attention import cpu_paged_attention

    heads, kv_heads = 6, 2
    starts_q, starts_k, query, key, value = packed_batch(lengths, heads, kv_heads)
    module = type("Attention", (), {"layer_idx": 0})()
    cache = PackedCache(key, value, starts_k)
    got, _ = cpu_paged_attention(
        module, query, key[:, :, :0], value[:, :, :0], None, scaling=0.5, cache=cache,
        cu_seq_lens_q=torch.tensor(starts_q),
    )  # fmt: skip
    # Reference: every query against every key of the batch, masked block-diagonally and causally.
    allowed = torch.zeros(starts_q[-1], starts_k[-1], dtype=torch.bool)
    for i, (q_len, k_len) in enumerate(lengths):
        block = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        allowed[starts_q[i] : starts_q[i + 1], starts_k[i] : starts_k[i + 1]] = block
    repeated = [t.repeat_interleave(heads // kv_heads, dim=1) for t in (key, value)]
    scores = (query @ repeated[0].transpose(-1, -2) * 0.5).masked_fill(~allowed, float("-inf"))
    expected = (scores.softmax(-1) @ repeated[1]).transpose(1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["stock", "transposed"])
def test_batched_gptoss_requests_with_per_request_attention_match_plain_generate(
    layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sinks and a sliding window (16 tokens) on the real gpt-oss code path; prompts of 220-250 tokens.
    The transposed linear layout hands attention q/k/v whose last dimension is not contiguous."""
    from engine.tiny import build_tiny_gptoss

    paths = count_direct_decodes(monkeypatch)
    model, tokenizer = build_tiny_gptoss()
    choose_cpu_linear(model, layout)
    chats = [({"role": "user", "content": "x" * 8 * i},) for i in range(4)]
    requests = [GenerationRequest(messages=chat, max_tokens=10, ignore_eos=True) for chat in chats]
    expected = []
    for request in requests:
        ids = torch.tensor([render_prompt(tokenizer, True, request)])
        out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None)
        expected.append(out[0, ids.shape[1] :].tolist())
    # 48 tokens per step: prompts are prefilled in chunks longer than the window, next to others' decodes.
    engine = Engine(model, tokenizer, TAGS, is_harmony=True, max_batch=8, sizing=CacheSizing(16, 64, 48))
    try:
        assert engine.cpu_attention and model.config._attn_implementation == CPU_ATTENTION
        with pytest.raises(RuntimeError, match="shut its engine down"):
            model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=1)
        handles = [engine.submit(request) for request in requests]
        generated = [record_token_ids(handle) for handle in handles]
        results = [handle.result(timeout=60) for handle in handles]
    finally:
        engine.shutdown()
    assert model.config._attn_implementation == "eager"  # shutdown switched it back
    assert all(r.completion_tokens == 10 for r in results)
    assert generated == expected
    assert len({tuple(ids) for ids in expected}) > 1  # the requests' outputs differ: a real comparison
    assert paths["direct"] > 0 and paths["general"] > 0, paths  # full layers direct, sliding ones not


def record_token_ids(handle: object) -> list[int]:
    """The token ids the engine hands to the request's stream (the result carries only text)."""
    stream = handle.stream  # type: ignore[attr-defined]
    seen: list[int] = []
    on_output = stream.on_output

    def recording(tokens: list[int], timestamps: list[float]) -> object:
        seen[:] = tokens
        return on_output(tokens, timestamps)

    stream.on_output = recording
    return seen


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("window", [0, 4])
@pytest.mark.parametrize(
    "lengths",
    [
        [(1, 9), (5, 5), (3, 11), (1, 4), (1, 7)],
        [(1, 3), (1, 12)],
        [(1, 6)],
        [(9, 9), (1, 3)],
        [(6, 10), (1, 4)],
    ],
)
def test_attention_with_sinks_and_window_equals_transformers_paged_eager(
    lengths: list, window: int, strided: bool
) -> None:
    """The reference is transformers' own paged|eager forward over its block-diagonal mask."""
    from transformers.generation.continuous_batching.utils import build_attention_mask
    from transformers.integrations.eager_paged import eager_paged_attention_forward

    from engine.cpu.attention import cpu_paged_attention

    if window:  # a sliding-window layer's cache hands back at most window - 1 earlier tokens
        lengths = [(q_len, min(k_len, q_len + window - 1)) for q_len, k_len in lengths]
    heads, kv_heads = 6, 2
    starts_q, starts_k, query, key, value = packed_batch(lengths, heads, kv_heads)
    module = type("Attention", (), {"layer_idx": 0, "num_key_value_groups": heads // kv_heads})()
    module.sinks = torch.randn(heads) * 2
    if strided:  # the same values with a non-contiguous last dimension, as the transposed layout gives
        query, key, value = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (query, key, value))
    cache = PackedCache(key, value, starts_k)
    got, _ = cpu_paged_attention(
        module, query, key[:, :, :0], value[:, :, :0], None, scaling=0.5, cache=cache,
        cu_seq_lens_q=torch.tensor(starts_q), s_aux=module.sinks, sliding_window=window or None,
    )  # fmt: skip
    mask = torch.full((1, 1, starts_q[-1], starts_k[-1]), torch.finfo(torch.float32).min)
    build_attention_mask(mask, starts_q, starts_k, sliding_window=window or 1)
    expected, _ = eager_paged_attention_forward(
        module, query, key[:, :, :0], value[:, :, :0], mask, 0.5, cache=PackedCache(key, value, starts_k),
        cu_seq_lens_k={}, max_length_k={},
    )  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_engines_openmp_threads_run_at_a_higher_nice_value_after_its_first_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import threading

    from engine.cpu.priority import native_thread_ids
    from engine.tiny import build_tiny_gptoss

    if torch.get_num_threads() < 2:
        pytest.skip("torch runs on one thread here: there is no OpenMP pool to lower")
    monkeypatch.setenv("GPTOSS_CPU_NICE", "7")
    model, tokenizer = build_tiny_gptoss()
    engine = in_short_lived_thread(Engine, model, tokenizer, TAGS, is_harmony=True, max_batch=2)
    try:
        assert engine.core_share is not None
        engine.core_share.stop()  # whatever else runs on this machine now, the pool gets all its threads
        engine.core_share.wanted = engine.core_share.cores
        request = GenerationRequest(messages=({"role": "user", "content": "hi"},), max_tokens=3)
        assert engine.submit(request).result(timeout=60).completion_tokens == 3
        niced = [tid for tid in native_thread_ids() if os.getpriority(os.PRIO_PROCESS, tid) == 7]
        assert niced  # the generation thread's OpenMP workers
        python_threads = [thread.native_id for thread in threading.enumerate()]
        assert all(os.getpriority(os.PRIO_PROCESS, tid) != 7 for tid in python_threads if tid)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("value", ["abc", "-1", "20"])
def test_a_bad_cpu_nice_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from engine.cpu.priority import nice_from_env

    monkeypatch.setenv("GPTOSS_CPU_NICE", value)
    with pytest.raises(ValueError, match="GPTOSS_CPU_NICE"):
        nice_from_env()


def test_stock_attention_can_be_kept_and_a_bad_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.tiny import build_tiny_gptoss

    model, tokenizer = build_tiny_gptoss()
    monkeypatch.setenv("GPTOSS_CPU_ATTENTION", "stock")
    engine = Engine(model, tokenizer, TAGS, is_harmony=True, max_batch=2)
    try:
        assert not engine.cpu_attention and model.config._attn_implementation == "paged|eager"
        request = GenerationRequest(messages=({"role": "user", "content": "hi"},), max_tokens=3)
        assert engine.submit(request).result(timeout=60).completion_tokens == 3
    finally:
        engine.shutdown()
    monkeypatch.setenv("GPTOSS_CPU_ATTENTION", "fast")
    with pytest.raises(ValueError, match="GPTOSS_CPU_ATTENTION"):
        Engine(model, tokenizer, TAGS, is_harmony=True, max_batch=2)
