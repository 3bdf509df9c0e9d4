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
    ],
)
def test_broken_profiles_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    with pytest.raises(ProfileConfigError, match=message):
        load_profiles(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileConfigError, match="cannot read profiles file"):
        load_profiles(tmp_path / "absent.toml")
