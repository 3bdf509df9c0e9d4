"""bench/engine_speed.py judges a target by the median of its rounds' own ratios (each round runs every
method once, back to back), so the machine's drift between minutes does not fall on one method only."""

from __future__ import annotations

import pytest

from bench.engine_speed import round_ratio


def test_the_ratio_is_the_median_of_each_rounds_own_ratio() -> None:
    # round 1 ran on a slow minute, and so did the engine's run of round 2: the ratio of the medians
    # (9.5 / 15 = 0.63) would say the engine is a third slower; rounds 1 and 3 say 5-10%
    engine = {"tok_s": 9.5, "tok_s_runs": [9.0, 9.5, 14.0]}
    plain = {"tok_s": 15.0, "tok_s_runs": [10.0, 15.0, 15.0]}
    assert round_ratio(engine, plain, "tok_s") == pytest.approx(0.9)  # the median of 0.9, 0.63, 0.93


def test_without_the_same_rounds_it_is_the_ratio_of_the_medians() -> None:
    engine = {"tok_s": 12.0, "tok_s_runs": [12.0, 13.0]}
    plain = {"tok_s": 15.0}
    assert round_ratio(engine, plain, "tok_s") == pytest.approx(0.8)
    plain["tok_s_runs"] = [15.0]  # a different number of rounds: not pairs
    assert round_ratio(engine, plain, "tok_s") == pytest.approx(0.8)
