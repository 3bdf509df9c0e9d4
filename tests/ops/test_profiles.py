"""The profiles file: the shipped one, and clear errors for broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.profiles import ProfileConfigError, load_profiles
from tests.support.paths import REPO_ROOT


def test_the_shipped_profiles() -> None:
    profiles = load_profiles(REPO_ROOT / "profiles.toml")
    latency, quality = profiles["latency_first"], profiles["quality_first"]
    assert (latency.model, latency.model_size, latency.gpu_mode) == ("openai/gpt-oss-20b", "20b", "pipeline")
    assert (latency.max_batch, latency.max_tokens) == (32, 512)
    assert (quality.model, quality.model_size, quality.gpu_mode) == ("openai/gpt-oss-120b", "120b", "tensor")
    assert (quality.max_batch, quality.max_tokens) == (8, 2048)


GOOD = {"model": "'m'", "model_size": "'1b'", "gpu_mode": "'tensor'", "max_batch": "1", "max_tokens": "5"}


def profile_table(**changes: str | None) -> str:
    """A [profiles.a] table: GOOD with `changes` applied (None drops a key)."""
    keys = {key: value for key, value in (GOOD | changes).items() if value is not None}
    return "[profiles.a]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        ("[profiles", "cannot read"),
        (profile_table(max_batch="0"), "max_batch"),
        (profile_table(gpu_mode="'warp'"), "gpu_mode"),
        (profile_table(max_tokens=None), "max_tokens"),
        (profile_table(max_tokens="'5'"), "max_tokens"),
        (profile_table(surprise="1"), "surprise"),
        (profile_table(temperature="2.5"), "temperature"),
        (profile_table(top_p="0"), "top_p"),
        (profile_table(reasoning_effort="'max'"), "reasoning_effort"),
        (profile_table(allow_demo="'yes'"), "allow_demo"),
    ],
)
def test_broken_profiles_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    with pytest.raises(ProfileConfigError, match=message):
        load_profiles(path)


def test_sampling_defaults_are_optional_keys(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(profile_table(temperature="0", top_p="0.9", reasoning_effort="'high'"))
    profile = load_profiles(path)["a"]
    assert (profile.temperature, profile.top_p, profile.reasoning_effort) == (0.0, 0.9, "high")
    assert profile.as_api_dict()["temperature"] == 0.0
    path.write_text(profile_table())
    profile = load_profiles(path)["a"]
    assert (profile.temperature, profile.top_p, profile.reasoning_effort) == (None, None, None)
    assert "temperature" not in profile.as_api_dict()  # not set: the model's own, at submit


def test_allow_demo_is_an_optional_bool_the_start_check_gets(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(profile_table(allow_demo="false"))
    spec = load_profiles(path)["a"].preflight_spec(path)
    assert (spec.name, spec.model, spec.gpu_mode) == ("a", "m", "tensor")
    assert (spec.max_batch, spec.max_tokens) == (1, 5)
    assert spec.allow_demo is False and spec.profiles_file == str(path)
    path.write_text(profile_table())
    assert load_profiles(path)["a"].allow_demo is None  # the machine decides (engine/preflight.py)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileConfigError, match="cannot read profiles file"):
        load_profiles(tmp_path / "absent.toml")
