"""The start check (engine/preflight.py): every impossible profile is refused with one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.preflight import (
    PROMPT_TOKENS,
    Checkpoint,
    GiB,
    Machine,
    PreflightError,
    ProfileSpec,
    read_checkpoint,
)
from engine.startup import check_profile
from tests.support.checkpoints import save_header_only_gptoss_20b

ONE_H100 = Machine(gpu_free_bytes=(80 * GiB,))
FAKE_8GIB_GPU = Machine(gpu_free_bytes=(8 * GiB,))
CPU_ONLY = Machine()


def quality_first(model: str, **changes: object) -> ProfileSpec:
    fields: dict[str, object] = {"gpu_mode": "pipeline", "max_batch": 8, "max_tokens": 2048} | changes
    return ProfileSpec("quality_first", model, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gptoss_20b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_header_only_gptoss_20b(tmp_path_factory.mktemp("gpt-oss-20b") / "gpt-oss-20b")


def test_a_missing_model_is_refused_on_a_gpu_box_naming_the_setting(empty_hf_cache: Path) -> None:
    with pytest.raises(PreflightError) as refused:
        check_profile(quality_first("/models/gpt-oss-120b"), ONE_H100)
    message = str(refused.value)
    assert message.startswith(
        'profiles.toml [profiles.quality_first] model = "/models/gpt-oss-120b": no such directory, '
        ".gguf file or cached model id"
    )
    assert (
        "allow_demo is false for profile quality_first (its default where CUDA GPUs are visible)" in message
    )


def test_a_missing_model_falls_back_to_the_demo_without_gpus(empty_hf_cache: Path) -> None:
    plan = check_profile(quality_first("openai/gpt-oss-120b"), CPU_ONLY)
    assert (plan.source, plan.demo_fallback, plan.gpu_mode) == ("demo", True, "cpu")


def test_allow_demo_false_refuses_the_demo_even_on_a_laptop(empty_hf_cache: Path) -> None:
    with pytest.raises(PreflightError, match=r"allow_demo is false for profile quality_first\. Put"):
        check_profile(quality_first("openai/gpt-oss-120b", allow_demo=False), CPU_ONLY)


def test_allow_demo_true_lets_the_demo_stand_in_on_a_gpu_box(empty_hf_cache: Path) -> None:
    plan = check_profile(quality_first("openai/gpt-oss-120b", allow_demo=True), ONE_H100)
    assert plan.demo_fallback and plan.gpu_mode == "single"


def test_the_demo_asked_for_by_name_is_allowed_on_a_gpu_box() -> None:
    plan = check_profile(quality_first("demo"), ONE_H100)
    assert plan.source == "demo" and not plan.demo_fallback


def test_a_directory_without_config_or_weights_is_refused_even_where_the_demo_may_serve(
    tmp_path: Path,
) -> None:
    spec = quality_first(str(tmp_path), allow_demo=True)
    with pytest.raises(PreflightError, match=rf'model = "{tmp_path}": the directory .* has no config.json'):
        check_profile(spec, CPU_ONLY)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PreflightError, match=r"has no weights \(\*\.safetensors, \*\.bin\)"):
        check_profile(spec, CPU_ONLY)


def test_tensor_mode_is_refused_without_torchrun_or_with_one_gpu(gptoss_20b_dir: Path) -> None:
    spec = quality_first(str(gptoss_20b_dir), gpu_mode="tensor")
    with pytest.raises(PreflightError) as refused:
        check_profile(spec, Machine(gpu_free_bytes=(80 * GiB, 80 * GiB)))
    assert str(refused.value).startswith('profiles.toml [profiles.quality_first] gpu_mode = "tensor": ')
    assert "this worker has no torchrun;" in str(refused.value)
    assert 'or set gpu_mode = "pipeline"' in str(refused.value)
    with pytest.raises(PreflightError, match="this worker has 1 GPU visible;"):
        check_profile(spec, Machine(gpu_free_bytes=(80 * GiB,), distributed=True))


def test_tensor_mode_runs_as_tensor_under_torchrun_and_as_cpu_without_gpus(gptoss_20b_dir: Path) -> None:
    spec = quality_first(str(gptoss_20b_dir), gpu_mode="tensor")
    launched = Machine(gpu_free_bytes=(80 * GiB, 80 * GiB), distributed=True)
    assert check_profile(spec, launched).gpu_mode == "tensor"
    assert check_profile(spec, CPU_ONLY).gpu_mode == "cpu"


def test_pipeline_mode_is_single_on_one_gpu_and_pipeline_on_several(gptoss_20b_dir: Path) -> None:
    spec = quality_first(str(gptoss_20b_dir))
    assert check_profile(spec, ONE_H100).gpu_mode == "single"
    assert check_profile(spec, Machine(gpu_free_bytes=(40 * GiB, 40 * GiB))).gpu_mode == "pipeline"


def test_an_unknown_gpu_mode_is_refused() -> None:
    with pytest.raises(PreflightError, match=r'gpu_mode = "sideways": gpu_mode must be one of'):
        check_profile(quality_first("demo", gpu_mode="sideways"), CPU_ONLY)


def test_the_checkpoint_sizes_come_from_the_safetensors_headers(gptoss_20b_dir: Path) -> None:
    checkpoint = read_checkpoint(gptoss_20b_dir)
    assert checkpoint.mxfp4
    assert 12 * GiB < checkpoint.packed_bytes < 13 * GiB  # gpt-oss-20b ships 12.8 GiB of weights
    assert 38 * GiB < checkpoint.dequantized_bytes < 40 * GiB  # its experts in bf16
    assert checkpoint.windows == (128, None) * 12
    assert checkpoint.kv_bytes_per_layer_token == 2 * 8 * 64 * 2


def test_the_kv_cache_estimate_keeps_only_the_window_of_sliding_layers() -> None:
    checkpoint = Checkpoint(0, 0, False, windows=(128, None), kv_bytes_per_layer_token=10, max_context=4096)
    assert checkpoint.kv_bytes(requests=2, tokens=1000) == 2 * (128 + 1000) * 10
    assert checkpoint.kv_bytes(requests=1, tokens=100_000) == (128 + 4096) * 10  # capped at the context


def test_a_model_that_does_not_fit_a_fake_8_gib_gpu_is_refused(gptoss_20b_dir: Path) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=32, max_tokens=512)
    with pytest.raises(PreflightError) as refused:
        check_profile(spec, Machine(gpu_free_bytes=(8 * GiB,), mxfp4_kernels=True))
    message = str(refused.value)
    assert message.startswith(
        f'profiles.toml [profiles.latency_first] model = "{gptoss_20b_dir}" with max_batch = 32'
    )
    assert f"for 32 x {512 + PROMPT_TOKENS} tokens" in message
    assert "1 visible GPU(s) have 8.0 GiB free (7.2 GiB usable, 10% kept free)" in message
    assert "the weights alone do not fit" in message


def test_mxfp4_stays_packed_where_kernels_work_offline(gptoss_20b_dir: Path) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=32, max_tokens=512)
    plan = check_profile(spec, Machine(gpu_free_bytes=(24 * GiB,), mxfp4_kernels=True))
    assert plan.mxfp4_packed is True
    assert plan.needed_bytes is not None and 13 * GiB < plan.needed_bytes < 24 * GiB


def test_mxfp4_without_kernels_is_dequantized_where_bf16_fits(gptoss_20b_dir: Path) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=32, max_tokens=512)
    plan = check_profile(spec, ONE_H100)
    assert plan.mxfp4_packed is False and plan.needed_bytes is not None and plan.needed_bytes > 38 * GiB


def test_mxfp4_without_kernels_that_does_not_fit_in_bf16_is_refused_saying_what_fits(
    gptoss_20b_dir: Path,
) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=32, max_tokens=512)
    with pytest.raises(PreflightError) as refused:
        check_profile(spec, Machine(gpu_free_bytes=(24 * GiB,)))
    message = str(refused.value)
    assert "its MXFP4 experts are dequantized to bf16 here" in message
    assert "the weights would take 12.8 GiB" in message  # packed, with kernels
    assert "the weights alone do not fit" in message


def test_the_refusal_names_the_largest_batch_that_fits(gptoss_20b_dir: Path) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=4096, max_tokens=4096)
    with pytest.raises(PreflightError, match=r"; at most max_batch = 492 fits\. Lower max_batch"):
        check_profile(spec, Machine(gpu_free_bytes=(80 * GiB,), mxfp4_kernels=True))


def test_mxfp4_is_always_dequantized_on_a_cpu_and_memory_is_not_checked(gptoss_20b_dir: Path) -> None:
    spec = ProfileSpec("latency_first", str(gptoss_20b_dir), "pipeline", max_batch=32, max_tokens=512)
    plan = check_profile(spec, Machine(mxfp4_kernels=True))
    assert (plan.mxfp4_packed, plan.needed_bytes, plan.gpu_mode) == (False, None, "cpu")
