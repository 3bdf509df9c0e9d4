"""The engine in a child process (engine/process.py) on the tiny random gpt-oss model."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.cpu.threads import openmp_env, usable_cores
from engine.engine import Engine
from engine.loader import load_model
from engine.process import EngineProcess, EngineSpec, EngineStartError
from engine.request_stream import RequestStream
from engine.types import GenerationRequest, GenerationResult, TokenDelta
from tests.support.engine_runs import run_all
from tests.support.paths import REPO_ROOT


def ask(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


def spec_for(model_dir: Path, tmp: Path, nice: int = 0) -> EngineSpec:
    return EngineSpec(str(model_dir), "pipeline", "latency_first", 8, str(tmp / "models"), nice=nice)


@pytest.fixture(scope="module")
def remote(tiny_model_dir: Path, test_dir: Path) -> Iterator[EngineProcess]:
    engine = EngineProcess(spec_for(tiny_model_dir, test_dir, nice=7))
    yield engine
    engine.shutdown()


def test_same_answers_as_the_engine_in_this_process(remote: EngineProcess, tiny_model_dir: Path) -> None:
    requests = [ask(f"question {i} " * (i + 1), max_tokens=6 + 5 * i, seed=i) for i in range(6)]
    requests.append(ask("sampled", max_tokens=12, temperature=0.9, seed=7))
    requests.append(ask("stops", max_tokens=40, stop=("a",)))
    remote_results = run_all(remote, requests)
    loaded = load_model(str(tiny_model_dir))
    local = Engine.from_loaded(loaded, profile="latency_first", max_batch=8)
    try:
        local_results = run_all(local, requests)
    finally:
        local.shutdown()
    assert remote.tags == local.tags
    assert len(remote_results) == len(requests)
    for mine, theirs in zip(remote_results, local_results, strict=True):
        assert (mine.content, mine.reasoning, mine.finish_reason, mine.completion_tokens) == (
            theirs.content,
            theirs.reasoning,
            theirs.finish_reason,
            theirs.completion_tokens,
        )
        assert mine.prompt_tokens == theirs.prompt_tokens
        assert len(mine.token_times) == mine.completion_tokens
        assert mine.token_times == sorted(mine.token_times)
        assert abs(mine.token_times[-1] - time.time()) < 60  # wall-clock times, not the child's counter


def test_events_stream_deltas_then_one_result(remote: EngineProcess) -> None:
    events = list(remote.submit(ask("stream me", max_tokens=15, ignore_eos=True)).events(timeout=60))
    assert isinstance(events[-1], GenerationResult)
    assert not any(isinstance(event, GenerationResult) for event in events[:-1])
    assert events[-1].completion_tokens == 15
    streamed = [event for event in events[:-1] if isinstance(event, TokenDelta)]
    assert "".join(e.reasoning + e.content for e in streamed) == events[-1].reasoning + events[-1].content


def test_with_a_delta_callback_the_job_thread_sees_only_the_first_delta_and_the_result(
    remote: EngineProcess,
) -> None:
    request = ask("push me", max_tokens=15, ignore_eos=True)
    pulled = list(remote.submit(request).events(timeout=60))
    called: list[TokenDelta] = []
    pushed = list(remote.submit(request, on_delta=called.append).events(timeout=60))
    assert [type(event) for event in pushed] == [TokenDelta, GenerationResult]
    assert pushed[0] == called[0]
    streamed = [d for d in pulled[:-1] if isinstance(d, TokenDelta)]
    # How tokens group into deltas depends on timing (a slow step joins two), so compare what they carry.
    carried = "".join(d.reasoning + d.content for d in called)
    assert carried == "".join(d.reasoning + d.content for d in streamed)
    assert called[-1].completion_tokens == streamed[-1].completion_tokens
    assert [d.completion_tokens for d in called] == sorted({d.completion_tokens for d in called})
    assert isinstance(pulled[-1], GenerationResult) and isinstance(pushed[-1], GenerationResult)
    assert (pushed[-1].content, pushed[-1].reasoning) == (pulled[-1].content, pulled[-1].reasoning)


def test_with_a_delta_callback_a_request_that_ends_with_its_first_token_yields_only_its_result(
    remote: EngineProcess,
) -> None:
    request = ask("one token", max_tokens=1, ignore_eos=True)
    pulled = list(remote.submit(request).events(timeout=60))
    assert [type(event) for event in pulled] == [TokenDelta, GenerationResult]  # without a callback
    called: list[TokenDelta] = []
    pushed = list(remote.submit(request, on_delta=called.append).events(timeout=60))
    assert [type(event) for event in pushed] == [GenerationResult]
    assert pushed[0].completion_tokens == 1 and len(pushed[0].token_times) == 1
    assert [(d.content, d.reasoning) for d in called] == [(pulled[0].content, pulled[0].reasoning)]


def test_a_request_whose_text_cannot_be_decoded_fails_alone(
    remote: EngineProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise UnicodeError("broken decoder")

    monkeypatch.setattr(RequestStream, "on_output", broken)
    result = remote.submit(ask("bad", max_tokens=5), on_delta=lambda _: None).result(timeout=60)
    assert result.finish_reason == "error" and "broken decoder" in (result.error or "")
    monkeypatch.undo()
    assert (
        remote.submit(ask("good", max_tokens=5), on_delta=lambda _: None).result(timeout=60).completion_tokens
        == 5
    )


def test_cancel_keeps_the_partial_text(remote: EngineProcess) -> None:
    handle = remote.submit(ask("long", max_tokens=3000, ignore_eos=True))
    events = handle.events(timeout=60)
    next(events)  # a token has come back
    cancelled_at = time.monotonic()
    handle.cancel()
    result = [event for event in events if isinstance(event, GenerationResult)][0]
    assert time.monotonic() - cancelled_at < 5
    assert result.finish_reason == "cancelled"
    assert 0 < result.completion_tokens < 3000
    assert remote.submit(ask("after cancel", max_tokens=3)).result(timeout=60).completion_tokens == 3


def test_sigterm_to_the_process_group_leaves_the_child_serving(remote: EngineProcess) -> None:
    """A warm shutdown signals the whole group; the worker's running jobs must still finish."""
    handle = remote.submit(ask("through the signal", max_tokens=40, ignore_eos=True))
    os.kill(remote.pid, signal.SIGTERM)
    os.kill(remote.pid, signal.SIGINT)
    result = handle.result(timeout=60)
    assert (result.finish_reason, result.completion_tokens) == ("length", 40)
    assert remote.is_running()


def test_prompt_too_long_fails_here_without_reaching_the_child(remote: EngineProcess) -> None:
    with pytest.raises(ValueError, match="exceeds the model's context"):
        remote.submit(ask("x", max_tokens=remote.max_context))


def test_every_thread_of_the_child_runs_at_the_nice_value(remote: EngineProcess) -> None:
    pid = remote.pid
    assert pid != os.getpid()
    threads = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    assert len(threads) >= 2  # the main thread and the generation thread at least
    assert {os.getpriority(os.PRIO_PROCESS, thread) for thread in threads} == {7}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # this process keeps its own


def test_the_child_starts_with_the_openmp_threads_and_wait_policy_chosen(remote: EngineProcess) -> None:
    environ = Path(f"/proc/{remote.pid}/environ").read_bytes().decode().split("\0")
    child = dict(item.split("=", 1) for item in environ if "=" in item)  # what libgomp read as it loaded
    chosen = openmp_env(usable_cores(), os.environ)
    assert {name: child.get(name) for name in chosen} == chosen
    if not os.environ.get("OMP_WAIT_POLICY"):
        assert "OMP_WAIT_POLICY" not in child  # libgomp's own spin; CoreShare sizes the team instead


def test_a_dead_child_ends_its_requests_with_an_error(tiny_model_dir: Path, test_dir: Path) -> None:
    engine = EngineProcess(spec_for(tiny_model_dir, test_dir))
    try:
        handle = engine.submit(ask("doomed", max_tokens=3000, ignore_eos=True))
        next(iter(handle.events(timeout=60)))
        os.kill(engine.pid, signal.SIGKILL)
        result = handle.result(timeout=30)
        assert result.finish_reason == "error"
        assert "generation loop stopped" in (result.error or "")
        assert not engine.is_running()
        with pytest.raises(RuntimeError, match="not accepting requests"):
            engine.submit(ask("too late", max_tokens=3))
    finally:
        engine.shutdown(timeout=5)


def test_a_model_that_cannot_load_raises_the_childs_error(tiny_model_dir: Path, test_dir: Path) -> None:
    bad = EngineSpec(str(tiny_model_dir), "sideways", "latency_first", 8, str(test_dir / "models"))
    with pytest.raises(EngineStartError, match="gpu_mode must be one of"):
        EngineProcess(bad)


def test_the_child_refuses_a_missing_model_the_profile_keeps_the_demo_from(test_dir: Path) -> None:
    missing = test_dir / "absent" / "gpt-oss-120b"
    spec = EngineSpec(str(missing), "tensor", "quality_first", 8, str(test_dir / "models"), allow_demo=False)
    with pytest.raises(EngineStartError) as refused:
        EngineProcess(spec)
    assert str(refused.value).startswith(
        f'PreflightError: profiles.toml [profiles.quality_first] model = "{missing}": no such directory'
    )
    assert "allow_demo is false for profile quality_first" in str(refused.value)


CHILD_OWNER = """
import sys, time
from engine.process import EngineProcess, EngineSpec
if __name__ == "__main__":
    engine = EngineProcess(EngineSpec(sys.argv[1], "pipeline", "latency_first", 4, sys.argv[2]))
    print(engine.pid, flush=True)
    time.sleep(600)
"""


def test_the_child_exits_when_the_worker_is_killed(tiny_model_dir: Path, test_dir: Path) -> None:
    script = test_dir / "engine_owner.py"
    script.write_text(CHILD_OWNER)
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir), str(test_dir / "models")],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{child}").exists() and _state(child) != "Z":
            assert time.monotonic() < deadline, "the engine process outlived its worker"
            time.sleep(0.1)
    finally:
        owner.kill()
        owner.wait()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


@contextmanager
def bare_engine_child(worker_pid: int) -> Iterator[tuple[subprocess.Popen[bytes], Any, Any]]:
    """`python -m engine.process` started as a worker starts it, told `worker_pid` is its worker;
    yields (child, commands sender, outputs receiver) and kills it at the end."""
    commands_child, commands = multiprocessing.Pipe(duplex=False)
    outputs, outputs_child = multiprocessing.Pipe(duplex=False)
    fds = (commands_child.fileno(), outputs_child.fileno())
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "engine.process", *map(str, fds), str(worker_pid)], pass_fds=fds, env=env
    )
    commands_child.close()
    outputs_child.close()
    try:
        yield child, commands, outputs
    finally:
        child.kill()
        child.wait()
        commands.close()
        outputs.close()


def tiny_spec(tiny_model_dir: Path, test_dir: Path) -> EngineSpec:
    return EngineSpec(str(tiny_model_dir), "pipeline", "latency_first", 4, str(test_dir / "models"))


def test_the_child_exits_when_the_worker_died_before_it_looked_for_its_parent(
    tiny_model_dir: Path, test_dir: Path
) -> None:
    """The worker's pid comes in argv: a child reparented before it started must not adopt its new parent."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # stands for a worker SIGKILLed right after it spawned the engine
    with bare_engine_child(gone.pid) as (child, commands, _):
        # the pipes stay open here: only the parent watch can tell the child its worker is gone
        commands.send(tiny_spec(tiny_model_dir, test_dir))
        assert child.wait(timeout=15) == 0


def test_a_child_that_cannot_report_ready_exits_though_its_worker_lives(
    tiny_model_dir: Path, test_dir: Path
) -> None:
    """Its "ready" meets a closed pipe (the worker's reader gone, the worker itself alive): the engine's
    own threads must not keep the process up, nor may it wait for a signal it ignores."""
    with bare_engine_child(os.getpid()) as (child, commands, outputs):
        outputs.close()  # nobody will read "ready"
        commands.send(tiny_spec(tiny_model_dir, test_dir))
        assert child.wait(timeout=60) == 0


def engine_children_of(worker_pid: int) -> list[int]:
    """The engine processes a worker started (its pid is their last argument), from the process table."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"engine.process" in argv and argv[-2:-1] == [str(worker_pid).encode()]:
                found.append(int(entry.name))
    return found


def test_a_worker_killed_while_its_model_loads_leaves_no_process(
    profiles_file: Path, tiny_model_dir: Path, test_dir: Path, tmp_path: Path, redis_base_url: str
) -> None:
    from tests.support.pipeline import start_worker
    from tests.support.services import IDLE_REDIS_DB

    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles_file), "GPTOSS_DATA_DIR": str(test_dir), "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gptoss.db'}",
        "REDIS_URL": f"{redis_base_url}/{IDLE_REDIS_DB}",
    }  # fmt: skip
    worker = start_worker("latency_first", env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not (children := engine_children_of(worker.pid)):  # the engine child starts, loads
            assert worker.poll() is None and time.monotonic() < deadline, (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)  # mid-load: no warm shutdown, no goodbye on the pipe
        worker.wait()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in children):
            assert time.monotonic() < deadline, f"engine processes {children} outlived their worker"
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
