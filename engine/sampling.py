"""Per-request sampling inside one continuous batch.

transformers' continuous batching samples every row with one global setting and one global
RNG. Jobs in one batch want their own `temperature`, `top_p` and `seed`, and a seeded job must
give the same text whatever else shares its batch. `RequestSampler` is a continuous-batching
logits processor that draws each sampled row's token itself (with a per-request generator
seeded by `seed` and the token's position) and masks every other token, so the batch's argmax
picks exactly that token. Greedy rows (temperature 0) pass through untouched.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.logits_process import LogitsProcessorList

# One row of sampling parameters: (temperature, top_p, seed or None, tokens generated so far).
SamplingRow = tuple[float, float, int | None, int]


class RequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {"temperature": float, "top_p": float, "seed": int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        # prepare_tensor_args and __call__ may be one batch apart (async batching), so rows are
        # kept per batch and found again through the batch number written into the tensor arg.
        self._rows: dict[int, list[SamplingRow]] = {}
        self._batch_numbers = itertools.count(1)
        self._lock = threading.Lock()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        rows = [row_of(request.state) for request in requests_with_new_token]
        batch_number = next(self._batch_numbers) % (2**31 - 1)
        with self._lock:
            self._rows[batch_number] = rows
            for old in [n for n in self._rows if n < batch_number - 4]:
                del self._rows[old]
        return torch.full((len(rows),), batch_number, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        # scores: [num_rows, vocab]
        if scores.size(0) == 0:
            return scores
        with self._lock:
            rows = self._rows.pop(int(tensor_arg[0].item()), [])
        for index, (temperature, top_p, seed, position) in enumerate(rows[: scores.size(0)]):
            if temperature <= 0.0:
                continue
            token = sample_token(scores[index], temperature, top_p, seed, position)
            chosen = scores[index, token].clone()
            scores[index].fill_(float("-inf"))
            scores[index, token] = torch.where(torch.isinf(chosen), torch.zeros_like(chosen), chosen)
        return scores


def row_of(state: Any) -> SamplingRow:
    """Read one request's sampling parameters from its state."""
    kwargs = state.logit_processor_kwargs
    return (
        float(kwargs.get("temperature", 0.0)),
        float(kwargs.get("top_p", 1.0)),
        kwargs.get("seed"),
        len(state.generated_tokens),
    )


def sample_token(
    logits: torch.Tensor, temperature: float, top_p: float, seed: int | None, position: int
) -> int:
    """Draw one token id from `logits` ([vocab]) with temperature and nucleus filtering."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_ids = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, sorted_ids, sorted_probs)
    generator = None
    if seed is not None:
        # The position makes each step draw fresh randomness while staying reproducible.
        generator = torch.Generator(device=probs.device)
        generator.manual_seed((seed * 1_000_003 + position) % (2**63 - 1))
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())


def install_request_sampler(manager: Any) -> RequestSampler:
    """Replace a fresh manager's logits processors with one RequestSampler (before it starts)."""
    sampler = RequestSampler()
    processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([sampler]))
    processors.tensors_required = 1
    manager.logit_processor = processors
    return sampler
