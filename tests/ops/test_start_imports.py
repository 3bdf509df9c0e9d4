"""What a process imports to start: torch and transformers' model code cost seconds of CPU each time.

A worker's Celery process only talks to its engine's child (engine/process.py), its start check needs
torch only where a GPU could be (engine/preflight.py), and the API's prompt check reads a tokenizer and
a config.json (app/jobs/budget.py). None of them imports torch on a CPU box: each would pay for it at
every start, in `make run` and in every test that starts one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.jobs.budget import load_token_counter, read_context
from engine import preflight
from engine.preflight import Machine, detect_machine, gpu_device_nodes
from engine.prompt import render_prompt
from engine.types import GenerationRequest
from tests.support.paths import REPO_ROOT

HARMONY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"


def imported_after(code: str) -> set[str]:
    """The heavy packages a fresh interpreter holds after running `code`."""
    heavy = "{'torch', 'transformers.models'} & set(sys.modules)"
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({heavy})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_workers_engine_proxy_imports_no_torch() -> None:
    assert imported_after("import engine.process") == set()


def test_the_apis_prompt_counter_imports_no_torch_and_counts_as_the_engines_tokenizer(tmp_path: Path) -> None:
    count = (
        "from pathlib import Path\n"
        "from app.jobs.budget import load_token_counter\n"
        "from engine.types import GenerationRequest\n"
        f"counter = load_token_counter({str(HARMONY_MODEL)!r}, Path({str(tmp_path)!r}))\n"
        "assert counter.context and counter.is_harmony\n"
        "print(counter.prompt_tokens(GenerationRequest(messages=({'role': 'user', 'content': 'Hi'},))))\n"
    )
    assert imported_after(count) == set()

    from transformers import AutoTokenizer  # as the engine loads it (engine/loader.py)

    request = GenerationRequest(messages=({"role": "user", "content": "What is the capital of France?"},))
    engines = AutoTokenizer.from_pretrained(HARMONY_MODEL, local_files_only=True)
    counter = load_token_counter(str(HARMONY_MODEL), tmp_path)
    assert type(counter.tokenizer) is type(engines)
    assert counter.prompt_ids(request) == render_prompt(engines, True, request)


def test_the_context_is_read_from_config_json_as_transformers_reads_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt_oss", "max_position_embeddings": 4096})
    )
    assert read_context(tmp_path) == (4096, True)
    nested = {"model_type": "llava", "text_config": {"max_position_embeddings": 8192}}
    (tmp_path / "config.json").write_text(json.dumps(nested))
    assert read_context(tmp_path) == (8192, False)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "max_position_embeddings": "big"})
    )
    with pytest.raises(ValueError, match="max_position_embeddings is 'big'"):
        read_context(tmp_path)


def test_a_config_without_a_usable_context_leaves_the_check_to_the_worker(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("[1, 2]")
    counter = load_token_counter(str(model), tmp_path / "cache")
    assert (counter.tokenizer, counter.context) == (None, None)


def test_the_start_check_imports_no_torch_where_no_gpu_device_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "gpu_device_nodes", lambda: [])
    monkeypatch.setitem(sys.modules, "torch", None)  # an `import torch` now raises ImportError
    assert detect_machine() == Machine()


def test_gpu_device_nodes_are_nvidias_rocms_and_wsls(tmp_path: Path) -> None:
    assert gpu_device_nodes(tmp_path) == []
    for name in ("nvidiactl", "null"):  # the control node alone is no GPU
        (tmp_path / name).touch()
    assert gpu_device_nodes(tmp_path) == []
    for name in ("nvidia0", "kfd", "dxg"):
        (tmp_path / name).touch()
    assert sorted(node.name for node in gpu_device_nodes(tmp_path)) == ["dxg", "kfd", "nvidia0"]
