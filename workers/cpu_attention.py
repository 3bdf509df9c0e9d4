"""Attention for the continuous batch on CPU: each request attends to its own keys, not the whole batch.

transformers' "sdpa" path treats the packed batch as one sequence: every query token attends to
every request's keys through a block-diagonal mask, after copying the key/value heads up to the
query heads. With 32 requests decoding, that is 32x the needed attention and a copy of the whole
batch's cache per layer: about 250 of a 310 ms decode step of the demo model on this project's
2-core machines. Here each request attends to its own keys only, on its key/value heads; all
requests decoding one token share one SDPA call over their keys padded to the longest.

Used for models whose attention is plain causal (no sliding window, no attention sinks); other
models keep transformers' own path ("paged|eager" for gpt-oss).
"""

from __future__ import annotations

from typing import Any

NAME = "gptoss_cpu_paged_sdpa"
_REPLACES = "sdpa"


def use_cpu_paged_attention(model: Any) -> bool:
    """Switch a CPU model in continuous batching from "sdpa" to per-request attention; True if switched."""
    config = model.config
    if model.device.type != "cpu" or config._attn_implementation != _REPLACES or not _plain_causal(model):
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, cpu_paged_attention)
    model.set_attn_implementation(NAME)
    return True


def restore_attention(model: Any) -> None:
    """Undo use_cpu_paged_attention (after the batch loop has stopped)."""
    if model.config._attn_implementation == NAME:
        model.set_attn_implementation(_REPLACES)


def _plain_causal(model: Any) -> bool:
    text = model.config.get_text_config()
    layer_types = set(getattr(text, "layer_types", None) or ["full_attention"])
    has_sinks = any(hasattr(module, "sinks") for module in model.modules())
    return layer_types == {"full_attention"} and not getattr(text, "sliding_window", None) and not has_sinks


def cpu_paged_attention(
    module: Any,
    query: Any,  # [1, heads, q_tokens, head_dim]: every request's new tokens, packed
    key: Any,  # [1, kv_heads, q_tokens, head_dim]
    value: Any,
    attention_mask: Any,  # the block-diagonal mask transformers built; not needed here
    dropout: float = 0.0,
    scaling: float | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    import torch
    import torch.nn.functional as F

    if cache is None:  # a plain forward (model.generate) while an engine holds the model
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # Writes the new keys/values, reads back each request's whole sequence packed: [1, kv_heads, k_tokens, D].
    key, value = cache.update(key_states=key, value_states=value, layer_idx=module.layer_idx, kwargs=kwargs)
    starts_q = kwargs["cu_seq_lens_q"].tolist()
    starts_k = kwargs["cu_seq_lens_k"].tolist()
    spans = list(zip(starts_q, starts_q[1:], starts_k, starts_k[1:], strict=False))
    if len(spans) == 1 and query.shape[2] == 1:  # one request decoding: nothing to scatter
        return _decode_one(query, key, value, scaling).transpose(1, 2), None
    out = query.new_empty(query.shape)
    decoding = [span for span in spans if span[1] - span[0] == 1]
    if len(decoding) > 1:
        _decode_together(out, query, key, value, decoding, scaling, cache)
    for q0, q1, k0, k1 in spans:
        q_len, k_len = q1 - q0, k1 - k0
        if q_len == 0 or (q_len == 1 and len(decoding) > 1):
            continue
        q, k, v = query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1]
        if q_len == 1:
            out[:, :, q0:q1] = _decode_one(q, k, v, scaling)
        elif q_len == k_len:
            out[:, :, q0:q1] = F.scaled_dot_product_attention(
                q, k, v, scale=scaling, is_causal=True, enable_gqa=True
            )
        else:  # a prefill chunk after earlier chunks: causal, aligned to the end of the keys
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
            out[:, :, q0:q1] = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=scaling, enable_gqa=True
            )
    return out.transpose(1, 2).contiguous(), None


def _decode_one(q: Any, k: Any, v: Any, scaling: float | None) -> Any:
    """One new token: the query heads of each key/value head become that head's query rows (no copies)."""
    import torch.nn.functional as F

    heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[-1]
    packed = q.reshape(1, kv_heads, heads // kv_heads, head_dim)
    return F.scaled_dot_product_attention(packed, k, v, scale=scaling).reshape(1, heads, 1, head_dim)


def _decode_together(
    out: Any,
    query: Any,
    key: Any,
    value: Any,
    spans: list[tuple[int, int, int, int]],
    scaling: float | None,
    cache: Any,
) -> None:
    """All one-token requests in one SDPA call, their keys gathered into [requests, kv_heads, longest, D]."""
    import torch.nn.functional as F

    positions, gather, mask = _decode_layout(spans, query.device, cache)
    requests, heads, kv_heads, head_dim = len(spans), query.shape[1], key.shape[1], query.shape[-1]
    q = query[0][:, positions].transpose(0, 1).reshape(requests, kv_heads, heads // kv_heads, head_dim)
    k = key[0][:, gather].transpose(0, 1)  # [requests, kv_heads, longest, D]
    v = value[0][:, gather].transpose(0, 1)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    out[0][:, positions] = attended.reshape(requests, heads, head_dim).transpose(0, 1)


def _decode_layout(spans: list[tuple[int, int, int, int]], device: Any, cache: Any) -> tuple[Any, Any, Any]:
    """Query positions, padded key indices and key mask of the decoding requests; the same for every
    layer of a step, so it is kept on the cache until the batch changes."""
    import torch

    memo = getattr(cache, "_gptoss_decode_layout", None)
    if memo is not None and memo[0] == spans:
        return memo[1]  # type: ignore[no-any-return]
    positions = torch.tensor([q0 for q0, _, _, _ in spans], device=device)
    starts = torch.tensor([k0 for _, _, k0, _ in spans], device=device)
    lengths = torch.tensor([k1 - k0 for _, _, k0, k1 in spans], device=device)
    offsets = torch.arange(int(lengths.max()), device=device)
    gather = starts[:, None] + torch.minimum(offsets[None, :], lengths[:, None] - 1)  # [requests, longest]
    mask = (offsets[None, :] < lengths[:, None])[:, None, None, :]  # [requests, 1, 1, longest]
    layout = (positions, gather, mask)
    cache._gptoss_decode_layout = (spans, layout)
    return layout
