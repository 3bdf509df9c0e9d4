"""A worker's GIL switch interval: set from GPTOSS_WORKER_GIL_SWITCH_MS at worker start."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from app.settings import SettingsError, load_settings
from workers.gil import set_gil_switch_interval


@pytest.fixture
def restore_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_default_follows_where_the_engine_runs_and_the_env_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().worker_gil_switch_ms == 5.0  # the engine in a child process (the default)
    monkeypatch.setenv("GPTOSS_ENGINE_PROCESS", "0")
    assert load_settings().worker_gil_switch_ms == 0.5  # its generation thread in the worker's own
    monkeypatch.setenv("GPTOSS_WORKER_GIL_SWITCH_MS", "2")
    assert load_settings().worker_gil_switch_ms == 2.0
    monkeypatch.setenv("GPTOSS_WORKER_GIL_SWITCH_MS", "")
    assert load_settings().worker_gil_switch_ms == 0.5
    monkeypatch.setenv("GPTOSS_WORKER_GIL_SWITCH_MS", "fast")
    with pytest.raises(SettingsError, match="GPTOSS_WORKER_GIL_SWITCH_MS"):
        load_settings()


def test_it_sets_the_processs_switch_interval(restore_switch_interval: None) -> None:
    set_gil_switch_interval(0.7)
    assert sys.getswitchinterval() == pytest.approx(0.0007)


@pytest.mark.parametrize("value", [0, -1, 1000])
def test_a_bad_value_is_refused_naming_the_variable(value: float, restore_switch_interval: None) -> None:
    with pytest.raises(ValueError, match="GPTOSS_WORKER_GIL_SWITCH_MS"):
        set_gil_switch_interval(value)
