"""The fixed prompt suite per profile: a short chat, a code question and a long answer.

max_tokens stay small so that the demo model on a 2-core CPU (a few tokens/s per stream) meets the
personal SLO: the gate measures how responsive the service is, not how long an essay it can write.
The long answer is cut at max_tokens (finish_reason "length"), which still counts as a success.
Requests take the prompts in turn, so every run of the same length sends the same mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUITE_SEED = 1234  # fixed sampling seed, so runs are comparable


@dataclass(frozen=True)
class GatePrompt:
    name: str
    content: str
    max_tokens: int

    def job_body(self, profile: str, run_id: str, metadata_key: str) -> dict[str, Any]:
        """The POST /v1/jobs body, tagged as release-gate traffic of run `run_id`."""
        return {
            "messages": [{"role": "user", "content": self.content}],
            "profile": profile,
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "seed": SUITE_SEED,
            "reasoning_effort": "low",
            "metadata": {metadata_key: run_id},
        }


SHORT_CHAT = "What is the capital of France?"
CODE_QUESTION = "Write a Python function that returns the n-th Fibonacci number."
LONG_ANSWER = "Explain how a hash table works, with its strengths and weaknesses."

SUITES: dict[str, tuple[GatePrompt, ...]] = {
    "latency_first": (
        GatePrompt("short_chat", SHORT_CHAT, 16),
        GatePrompt("code_question", CODE_QUESTION, 24),
        GatePrompt("long_answer", LONG_ANSWER, 32),
    ),
    "quality_first": (
        GatePrompt("short_chat", SHORT_CHAT, 32),
        GatePrompt("code_question", CODE_QUESTION, 64),
        GatePrompt("long_answer", LONG_ANSWER, 96),
    ),
}


def suite_for(profile: str) -> tuple[GatePrompt, ...]:
    """The profile's suite; a profile added by the user gets the latency_first one."""
    return SUITES.get(profile, SUITES["latency_first"])
