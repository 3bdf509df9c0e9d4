"""Attention for the continuous batch on CPU: each request attends to its own keys, not the whole batch.

transformers' "sdpa" and "paged|eager" paths treat the packed batch as one sequence: every query
token attends to every request's keys through a block-diagonal mask, after copying the key/value
heads up to the query heads. With 32 requests decoding, that is 32x the needed attention and a copy
of the whole batch's cache per layer: about 250 of a 310 ms decode step of the demo model on this
project's 2-core machines. Worse, a prefill chunk next to running decodes attends to all their
keys. Here each request attends to its own keys only, on its key/value heads; all requests decoding
one token share one attention call over their keys padded to the longest.

gpt-oss's attention sinks (one learned logit per head that takes a share of the softmax) come from
the fused kernel's log-sum-exp: softmax over [scores, sink] weighs the plain attention output by
sigmoid(lse - sink). Sliding-window layers get their keys already cut to the window by the cache;
only a prefill chunk longer than the window needs the window in its mask.
"""

from __future__ import annotations

from typing import Any

NAME = "gptoss_cpu_paged"  # no "sdpa" in it: transformers would check the model supports sdpa
CHOICES = ("auto", "stock")
_REPLACEABLE = ("sdpa", "paged|sdpa", "paged|eager")  # what continuous batching leaves on a CPU model
_BEFORE = "_gptoss_attention_before"  # the model attribute that remembers what was replaced
Spans = tuple[tuple[int, int, int, int], ...]  # per request: query start, query end, key start, key end


def attention_choice(value: str) -> str:
    """GPTOSS_CPU_ATTENTION: "auto", or "stock" to keep transformers' own path."""
    if value not in CHOICES:
        raise ValueError(f"GPTOSS_CPU_ATTENTION must be one of {CHOICES}, not {value!r}")
    return value


def use_cpu_paged_attention(model: Any, choice: str = "auto") -> bool:
    """Switch a CPU model in continuous batching to per-request attention; True if switched."""
    before = model.config._attn_implementation
    if choice == "stock" or model.device.type != "cpu" or before not in _REPLACEABLE:
        return False
    if _has_sinks(model) and _sdpa_with_lse() is None:
        return False  # no fused kernel that reports the log-sum-exp in this torch: keep transformers' path
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, cpu_paged_attention)
    setattr(model, _BEFORE, before)
    model.set_attn_implementation(NAME)
    return True


def restore_attention(model: Any) -> None:
    """Undo use_cpu_paged_attention (after the batch loop has stopped)."""
    if model.config._attn_implementation == NAME:
        model.set_attn_implementation(getattr(model, _BEFORE, "sdpa"))


def _has_sinks(model: Any) -> bool:
    return any(hasattr(module, "sinks") for module in model.modules())


def _sdpa_with_lse() -> Any:
    """CPU fused attention returning (output, logsumexp); None where this torch lacks it."""
    import torch

    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def cpu_paged_attention(
    module: Any,
    query: Any,  # [1, heads, q_tokens, head_dim]: every request's new tokens, packed
    key: Any,  # [1, kv_heads, q_tokens, head_dim]
    value: Any,
    attention_mask: Any,  # None: transformers builds no mask for an attention it does not know
    dropout: float = 0.0,
    scaling: float | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    if cache is None:  # a plain forward (model.generate) while an engine holds the model
        return _plain_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    sinks = kwargs.get("s_aux")  # gpt-oss: [heads]
    window = kwargs.get("sliding_window") or 0
    starts_q = kwargs["cu_seq_lens_q"].tolist()
    decoded = _decode_from_cache(module.layer_idx, query, key, value, starts_q, scaling, sinks, cache, kwargs)
    if decoded is not None:
        return decoded, None
    # Writes the new keys/values, reads back each request's sequence packed: [1, kv_heads, k_tokens, D]
    # (for a sliding-window layer, at most the window's last tokens).
    key, value = cache.update(key_states=key, value_states=value, layer_idx=module.layer_idx, kwargs=kwargs)
    starts_k = kwargs["cu_seq_lens_k"].tolist()
    spans: Spans = tuple(zip(starts_q, starts_q[1:], starts_k, starts_k[1:], strict=False))
    if len(spans) == 1 and query.shape[2] == 1:  # one request decoding: nothing to scatter
        return _decode_one(query, key, value, scaling, sinks).transpose(1, 2), None
    out = query.new_empty(query.shape)
    decoding = tuple(span for span in spans if span[1] - span[0] == 1)
    if len(decoding) > 1:
        _decode_together(out, query, key, value, decoding, scaling, sinks, cache)
    for q0, q1, k0, k1 in spans:
        q_len = q1 - q0
        if q_len == 0 or (q_len == 1 and len(decoding) > 1):
            continue
        q, k, v = query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1]
        if q_len == 1:
            out[:, :, q0:q1] = _decode_one(q, k, v, scaling, sinks)
        else:
            out[:, :, q0:q1] = _prefill(q, k, v, scaling, sinks, window)
    return out.transpose(1, 2).contiguous(), None


def _plain_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    mask: Any,
    dropout: float,
    scaling: float | None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """A forward outside the batch (model.generate) while an engine holds the model: sdpa for plain causal
    models. transformers builds no mask for this attention, which gpt-oss's eager attention would need."""
    if hasattr(module, "sinks"):
        raise RuntimeError("this model is serving a continuous batch; shut its engine down before generate()")
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(  # type: ignore[no-any-return]
        module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _attend(q: Any, k: Any, v: Any, allowed: Any, scaling: float | None, sink_rows: Any) -> Any:
    """Attention of q [.., kv_heads, rows, D] on k/v [.., kv_heads, keys, D]; `allowed` a boolean mask
    or None; with sink_rows (each row's sink logit, [kv_heads, rows]) the sinks take their share."""
    import torch
    import torch.nn.functional as F

    if sink_rows is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)
    # The fused kernel reads the last dimension as contiguous (sdpa's own checks make it so): the
    # transposed nn.Linear layout (engine/cpu/linear.py) hands over q/k/v whose last dimension is not.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    bias = None
    if allowed is not None:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        bias.masked_fill_(~allowed, float("-inf"))
    out, lse = _sdpa_with_lse()(q, k, v, 0.0, False, attn_mask=bias, scale=scaling)
    return out * torch.sigmoid(lse - sink_rows).to(out.dtype).unsqueeze(-1)


def _sink_rows(sinks: Any, kv_heads: int, tokens: int) -> Any:
    """Sink logits for query rows folded as [kv_heads, groups * tokens] (group-major)."""
    if sinks is None:
        return None
    return sinks.float().reshape(kv_heads, -1).repeat_interleave(tokens, dim=1)


def _decode_one(q: Any, k: Any, v: Any, scaling: float | None, sinks: Any) -> Any:
    """One new token: the query heads of each key/value head become that head's query rows (no copies)."""
    heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[-1]
    packed = q.reshape(1, kv_heads, heads // kv_heads, head_dim)
    attended = _attend(packed, k, v, None, scaling, _sink_rows(sinks, kv_heads, 1))
    return attended.reshape(1, heads, 1, head_dim)


def _prefill(q: Any, k: Any, v: Any, scaling: float | None, sinks: Any, window: int) -> Any:
    """A prompt or a chunk of one: causal, aligned to the end of the keys, within the window if any."""
    import torch
    import torch.nn.functional as F

    heads, q_len, head_dim = q.shape[1], q.shape[2], q.shape[-1]
    kv_heads, k_len = k.shape[1], k.shape[2]
    windowed = 0 < window < k_len
    if sinks is None and not windowed and q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=True, enable_gqa=True)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
    if windowed:
        allowed.triu_(k_len - q_len - window + 1)
    if sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling, enable_gqa=True)
    groups = heads // kv_heads  # fold each key/value head's query heads into its rows, as in a decode
    folded = q.reshape(1, kv_heads, groups * q_len, head_dim)
    attended = _attend(folded, k, v, allowed.repeat(groups, 1), scaling, _sink_rows(sinks, kv_heads, q_len))
    return attended.reshape(1, heads, q_len, head_dim)


def _decode_together(
    out: Any,
    query: Any,
    key: Any,
    value: Any,
    spans: Spans,
    scaling: float | None,
    sinks: Any,
    cache: Any,
) -> None:
    """All one-token requests in one attention call, keys gathered into [requests, kv_heads, longest, D]."""
    positions, gather, mask = _decode_layout(spans, query.device, cache)
    k = key[0][:, gather].transpose(0, 1)  # [requests, kv_heads, longest, D]
    v = value[0][:, gather].transpose(0, 1)
    out[0][:, positions] = _decode_rows(
        query[0][:, positions].transpose(0, 1), k, v, mask, scaling, sinks
    ).transpose(0, 1)


def _decode_rows(q: Any, k: Any, v: Any, mask: Any, scaling: float | None, sinks: Any) -> Any:
    """One new token per request, q [requests, heads, D], against k/v [requests, kv_heads, longest, D] with
    the key mask [requests, 1, 1, longest] (None: no padding): the answer rows, [requests, heads, D]."""
    requests, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    folded = q.reshape(requests, kv_heads, heads // kv_heads, head_dim)  # each kv head's query heads as rows
    return _attend(folded, k, v, mask, scaling, _sink_rows(sinks, kv_heads, 1)).reshape(
        requests, heads, head_dim
    )


def _decode_from_cache(
    layer_idx: int,
    query: Any,
    key: Any,
    value: Any,
    starts_q: list[int],
    scaling: float | None,
    sinks: Any,
    cache: Any,
    kwargs: dict[str, Any],
) -> Any:
    """Every request decoding one token on a full-attention layer of transformers' paged cache: write the
    new keys/values, then gather each request's keys from the cache straight into [requests, kv_heads,
    longest, D]. cache.update would read the whole batch's keys back packed, which the padded gather then
    copies again: one copy of every key and value per layer instead of two. None where this does not apply
    (a prompt in the step, a sliding-window layer, a block-table cache, another cache): the caller takes
    the general path."""
    allocator: Any = getattr(cache, "layer_to_allocator", {}).get(layer_idx)
    if type(allocator).__name__ != "FullAttentionCacheAllocator" or kwargs.get("block_table") is not None:
        return None
    requests = len(starts_q) - 1
    if query.shape[2] != requests or starts_q[-1] != requests:  # a prompt, or a chunk of one, is in the step
        return None
    read_index = kwargs["read_index"][allocator.index]
    starts_k = kwargs["cu_seq_lens_k"][allocator.layer_type].tolist()
    spans: Spans = tuple(zip(starts_q, starts_q[1:], starts_k, starts_k[1:], strict=False))
    k_cache, v_cache = allocator._kv_token_views[layer_idx]  # [cache tokens, kv_heads, D]
    write_index = kwargs["write_index"][allocator.index]
    k_cache.index_copy_(0, write_index, key[0].transpose(0, 1))
    v_cache.index_copy_(0, write_index, value[0].transpose(0, 1))
    if requests == 1:  # its keys are read_index[k0:k1], unpadded: no layout, no gather of indices
        slots, mask = read_index[starts_k[0] : starts_k[1]].unsqueeze(0), None
    else:
        _, gather, mask = _decode_layout(spans, query.device, cache)
        slots = read_index[gather]  # [requests, longest]: where each request's keys lie in the cache
    # index_select, not k_cache[slots]: the same rows, a third of the time (advanced indexing builds a
    # TensorIterator; 110 keys of the demo model: 5.7 against 15 us in isolation)
    flat, shape = slots.reshape(-1), (*slots.shape, *k_cache.shape[1:])  # [requests, longest, kv_heads, D]
    k = k_cache.index_select(0, flat).view(shape).transpose(1, 2)  # [requests, kv_heads, longest, D]
    v = v_cache.index_select(0, flat).view(shape).transpose(1, 2)
    rows = _decode_rows(query[0].transpose(0, 1), k, v, mask, scaling, sinks)
    return rows.unsqueeze(0)  # [1, q_tokens, heads, D], as the caller returns


def _decode_layout(spans: Spans, device: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Query positions, padded key indices and key mask of the decoding requests. They are the same for
    every layer of a kind in a step, so they are kept on the cache (one per layer kind) for the step."""
    import torch

    memo: dict[Any, Any] = getattr(cache, "_gptoss_decode_layouts", None) or {}
    if spans in memo:
        return memo[spans]  # type: ignore[no-any-return]
    positions = torch.tensor([q0 for q0, _, _, _ in spans], device=device)
    starts = torch.tensor([k0 for _, _, k0, _ in spans], device=device)
    lengths = torch.tensor([k1 - k0 for _, _, k0, k1 in spans], device=device)
    offsets = torch.arange(int(lengths.max()), device=device)
    gather = starts[:, None] + torch.minimum(offsets[None, :], lengths[:, None] - 1)  # [requests, longest]
    mask = (offsets[None, :] < lengths[:, None])[:, None, None, :]  # [requests, 1, 1, longest]
    if len(memo) >= 4:  # a new step: the old layouts will not come back
        memo = {}
    memo[spans] = (positions, gather, mask)
    cache._gptoss_decode_layouts = memo
    return memo[spans]  # type: ignore[no-any-return]
