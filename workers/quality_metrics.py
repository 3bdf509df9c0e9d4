"""Answer-quality metrics of a worker (app/quality.py's signals), with the five tags, on its /metrics.

Rates come from counters: e.g. empty answers / scored answers over a window is
    rate(gptoss_answers_empty_total[1h]) / rate(gptoss_answers_scored_total[1h])
and the two ratios per answer are histograms (their _sum / _count is the mean).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.metrics import TAG_LABELS, tag_values
from app.models import Job
from app.quality import signals_of_row
from workers.metrics import WORKER_REGISTRY

SHARE_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

ANSWERS_SCORED = Counter(
    "gptoss_answers_scored", "Succeeded answers whose quality signals were computed", TAG_LABELS,
    registry=WORKER_REGISTRY,
)  # fmt: skip
HARMONY_FAILURES = Counter(
    "gptoss_answers_harmony_failed", "Answers whose output did not parse as well-formed harmony", TAG_LABELS,
    registry=WORKER_REGISTRY,
)  # fmt: skip
EMPTY_ANSWERS = Counter(
    "gptoss_answers_empty", "Answers with a blank final channel", TAG_LABELS, registry=WORKER_REGISTRY
)
TRUNCATED_ANSWERS = Counter(
    "gptoss_answers_truncated", "Answers cut off at max_tokens (finish_reason length)", TAG_LABELS,
    registry=WORKER_REGISTRY,
)  # fmt: skip
REASONING_SHARE = Histogram(
    "gptoss_answer_reasoning_share", "Reasoning / (reasoning + answer) of an answer, in characters",
    TAG_LABELS, buckets=SHARE_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
REPETITION = Histogram(
    "gptoss_answer_repetition", "Fraction of repeated word 3-grams in an answer", TAG_LABELS,
    buckets=SHARE_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip


def observe_answer_quality(job: Job) -> bool:
    """Count the stored signals of a job this worker just finished; False when it has none."""
    signals = signals_of_row(job)
    if signals is None:
        return False
    labels = tag_values(job.tags(), job.profile)
    ANSWERS_SCORED.labels(**labels).inc()
    flags = {
        HARMONY_FAILURES: not signals.harmony_ok,
        EMPTY_ANSWERS: signals.empty_answer,
        TRUNCATED_ANSWERS: signals.truncated,
    }
    for counter, flagged in flags.items():  # inc(0) too: every series exists from the first answer
        counter.labels(**labels).inc(1 if flagged else 0)
    REASONING_SHARE.labels(**labels).observe(signals.reasoning_share)
    REPETITION.labels(**labels).observe(signals.repetition)
    return True
