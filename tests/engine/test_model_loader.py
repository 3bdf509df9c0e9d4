"""Tests for engine.loader: local dirs, missing hub ids, and the cached demo model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine import loader as model_loader
from engine.loader import LoadedModel, ModelNotFoundError, load_model


def test_local_dir_tiny_gptoss(tmp_path: Path) -> None:
    from engine.tiny import save_tiny_gptoss

    directory = save_tiny_gptoss(tmp_path / "tiny-gptoss")
    loaded = load_model(str(directory), allow_demo_fallback=False)
    assert loaded.is_harmony and not loaded.is_demo
    assert loaded.model_id == "tiny-gptoss"
    assert (loaded.device, loaded.gpu_mode) == ("cpu", "cpu")
    assert loaded.model.config._attn_implementation == "eager"
    assert loaded.model_size == "0.2m"  # 159,568 parameters
    assert not loaded.model.training
    assert loaded.tokenizer.chat_template is None  # harmony is rendered by engine/prompt.py
    assert loaded.model.generation_config.eos_token_id is not None


def test_model_size_tags() -> None:
    assert model_loader._model_size("openai/gpt-oss-120b", 1) == "120b"
    assert model_loader._model_size("openai/gpt-oss-20b", 1) == "20b"
    assert model_loader._model_size("some/model", 135_000_000) == "135m"
    assert model_loader._model_size("some/model", 21_000_000_000) == "21b"
    assert model_loader._model_size("some/model", 1_700_000_000) == "1.7b"


def test_default_cache_dir_reads_env_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_DATA_DIR", str(tmp_path))
    assert model_loader.default_cache_dir() == tmp_path.resolve() / "models"
    monkeypatch.delenv("GPTOSS_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert model_loader.default_cache_dir() == tmp_path.resolve() / ".data" / "models"


def test_demo_gguf_path_exists() -> None:
    path = model_loader.demo_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"


def test_hub_id_found_in_local_hf_cache(empty_hf_cache: Path) -> None:
    from engine.tiny import save_tiny_gptoss

    # The HF cache layout: models--<org>--<name>/snapshots/<commit>/ plus refs/main naming the commit.
    repo = empty_hf_cache / "hub" / "models--openai--gpt-oss-20b"
    save_tiny_gptoss(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    loaded = load_model("openai/gpt-oss-20b", allow_demo_fallback=False)
    assert (loaded.model_id, loaded.model_size) == ("openai/gpt-oss-20b", "20b")
    assert loaded.is_harmony and not loaded.is_demo


def test_missing_hub_id_without_fallback_raises(empty_hf_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        load_model("openai/gpt-oss-20b", allow_demo_fallback=False)
    assert caught.value.source == "openai/gpt-oss-20b"
    assert "openai/gpt-oss-20b" in str(caught.value)


def test_missing_hub_id_falls_back_to_demo_loudly(
    empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = LoadedModel(
        model=None,
        tokenizer=None,
        model_id=model_loader.DEMO_MODEL_ID,
        model_size="135m",
        is_harmony=False,
        device="cpu",
        gpu_mode="cpu",
        is_demo=True,
        load_seconds=0.0,
    )
    # Stand in for the real demo load, which converts a GGUF for ~25 s.
    monkeypatch.setattr(model_loader, "load_demo_model", lambda cache_dir=None: fake)
    with caplog.at_level(logging.WARNING, logger="engine.loader"):
        loaded = load_model("openai/gpt-oss-20b")
    assert loaded.is_demo and loaded.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    banner = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(banner) == 1
    text = banner[0].getMessage()
    assert "openai/gpt-oss-20b" in text and "SmolLM2-135M-Instruct" in text and "DEMO" in text


@pytest.fixture(scope="module")
def demo_loads(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel, Path]:
    """Load the demo twice into a fresh cache: the first converts, the second reads the cache."""
    cache_dir = tmp_path_factory.mktemp("models")
    first = load_model("demo", cache_dir=cache_dir)
    second = load_model("demo", cache_dir=cache_dir)
    return first, second, cache_dir


@pytest.mark.slow
def test_demo_is_cached(demo_loads: tuple[LoadedModel, LoadedModel, Path]) -> None:
    first, second, cache_dir = demo_loads
    entries = [p.name for p in cache_dir.iterdir()]  # one converted dir, no temp dirs left behind
    assert len(entries) == 1 and entries[0].startswith("smollm2-135m-instruct-q4-1-gguf-")
    assert (cache_dir / entries[0] / "model.safetensors").is_file()
    assert second.load_seconds < first.load_seconds / 2, (first.load_seconds, second.load_seconds)
    for loaded in (first, second):
        assert loaded.is_demo and not loaded.is_harmony
        assert (loaded.model_id, loaded.model_size) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "135m")
        assert (loaded.device, loaded.gpu_mode) == ("cpu", "cpu")


@pytest.mark.slow
def test_demo_answers_paris(demo_loads: tuple[LoadedModel, LoadedModel, Path]) -> None:
    import torch

    loaded = demo_loads[1]
    tokenizer = loaded.tokenizer
    assert loaded.model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = loaded.model.generate(**inputs, max_new_tokens=20, do_sample=False)
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text


def test_a_conversion_parses_its_gguf_once_and_leaves_gguf_as_it_was(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    with model_loader.gguf_parsed_once():
        first, again = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert first is again and [t.name for t in first.tensors] == ["token_embd.weight"]
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)


def test_conversions_in_one_process_take_turns_and_leave_gguf_as_it_was() -> None:
    import threading

    import gguf

    reader = gguf.GGUFReader
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with model_loader.gguf_parsed_once():
            inside.set()
            release.wait(10)

    def second() -> None:
        with model_loader.gguf_parsed_once():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    assert not second_in.wait(0.3)  # waits for the first conversion's end
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_in.is_set() and gguf.GGUFReader is reader
