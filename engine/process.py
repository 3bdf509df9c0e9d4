"""The engine in a process of its own, so that the worker's job threads never wait behind it.

In one process, the generation loop and the worker's Celery and job threads share one GIL and, on a
CPU box, the same cores: a job's claim, its DB writes and its token events waited for both. Here the
worker process keeps the Celery consumer, the job threads, the DB and Redis work, and the tokenizer
(prompt rendering and detokenizing); a child process (`python -m engine.process`, in a
session of its own) loads the model and runs engine.engine.Engine. The child runs at
GPTOSS_CPU_NICE as a whole, which one process could not do without stalling the GIL holder: a woken
job thread, the API or Redis gets a core at once, and the engine takes every cycle they leave. Its
OpenMP thread count and wait policy come in its environment, chosen by engine.cpu.threads.openmp_env
(libgomp reads them as it loads, which is when the child imports this module).

Protocol, over two one-way pipes:
  worker -> engine  EngineSpec, then ("submit", request_id, prompt ids, GenerationRequest)
                    | ("cancel", request_id) | ("stop",)
  engine -> worker  ("ready", EngineInfo) | ("failed", message), then per decode step
                    ("outputs", [(request_id, new token ids, their timestamps, error, finished)], load)
The child exits when told to, when the worker's end of the pipe closes, or when the worker is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from engine.cpu.threads import OPENMP_VARIABLES, openmp_env, usable_cores
from engine.preflight import ProfileSpec
from engine.request_handle import DeltaCallback, RequestHandle
from engine.request_table import RequestTable
from engine.types import GenerationRequest, ModelTags

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class EngineSpec:
    """What the child loads: a profile's model, its batch width, and the nice value it runs at."""

    model: str
    gpu_mode: str
    profile: str
    max_batch: int
    cache_dir: str
    nice: int = 0
    max_tokens: int = 0  # with allow_demo and profiles_file: what the start check needs (engine/preflight.py)
    allow_demo: bool | None = None
    profiles_file: str = "profiles.toml"

    def profile_spec(self) -> ProfileSpec:
        return ProfileSpec(
            self.profile,
            self.model,
            self.gpu_mode,
            self.max_batch,
            self.max_tokens,
            self.allow_demo,
            self.profiles_file,
        )


@dataclass(frozen=True)
class EngineInfo:
    """What the worker needs of the loaded engine: its tags and what renders and decodes its text."""

    tags: ModelTags
    tokenizer: Any
    is_harmony: bool
    max_context: int
    eos_ids: frozenset[int]
    load_seconds: float


@dataclass
class RemoteOutput:
    """One step's output of a request, cumulative like transformers' GenerationOutput."""

    generated_tokens: list[int]
    timestamps: list[float]
    error: str | None
    finished: bool

    def is_finished(self) -> bool:
        return self.finished


@dataclass
class _Progress:
    tokens: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)


class EngineStartError(RuntimeError):
    """The engine process could not load its model (the message is the child's error)."""


class EngineProcess(RequestTable):
    """A profile's engine in a child process; submit/cancel/tags/load/shutdown like engine.engine.Engine."""

    def __init__(self, spec: EngineSpec, start_timeout_s: float | None = None) -> None:
        commands_child, commands = multiprocessing.Pipe(duplex=False)  # (receiving end, sending end)
        outputs, outputs_child = multiprocessing.Pipe(duplex=False)
        child_fds = (commands_child.fileno(), outputs_child.fileno())
        # Its own session: signals a terminal, the supervisor or the tests send to the worker's process group
        # (a warm shutdown's SIGTERM) must not reach it, since the worker's running jobs still need it.
        env = os.environ | openmp_env(usable_cores(), os.environ)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "engine.process", *map(str, child_fds), str(os.getpid())],
            pass_fds=child_fds,
            start_new_session=True,
            env=env | {"HF_HUB_OFFLINE": "1"},  # nothing it loads may reach a hub (kernels included)
        )
        commands_child.close()
        outputs_child.close()
        self._commands = commands
        self._outputs = outputs
        self._commands.send(spec)
        super().__init__()
        self._send_lock = threading.Lock()
        self._progress: dict[str, _Progress] = {}  # only the reader thread touches it
        self._load = {"running": 0, "waiting": 0}
        try:
            info = self._wait_ready(start_timeout_s)
        except BaseException:
            self._stop_process(timeout=5)
            raise
        self.tags = info.tags
        self.tokenizer = info.tokenizer
        self.is_harmony = info.is_harmony
        self.max_context = info.max_context
        self.eos_ids = set(info.eos_ids)
        self.load_seconds = info.load_seconds
        self._alive = True
        self._reader = threading.Thread(target=self._read_outputs, name=f"engine-{spec.profile}-outputs")
        self._reader.daemon = True
        self._reader.start()

    # -- requests ---------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, on_delta: DeltaCallback | None = None) -> RequestHandle:
        """Render the prompt here and queue it in the child's batch; thread-safe. With `on_delta`, the
        request's text is decoded on this proxy's output thread (engine/request_handle.py)."""
        handle, input_ids = self.open_request(request, on_delta)
        try:
            self._send(("submit", handle.request_id, input_ids, request))
        except (OSError, ValueError) as exc:
            self.forget(handle.request_id)
            raise RuntimeError(f"the engine process is not accepting requests: {exc}") from exc
        return handle

    def drop(self, request_id: str) -> None:
        """Remove a request from the child's batch without telling its handle."""
        try:
            self._send(("cancel", request_id))
        except (OSError, ValueError):
            pass  # the child is gone: nothing runs there any more

    # -- state ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._alive and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._process.pid

    def load(self) -> dict[str, int]:
        """Running and waiting request counts, as of the child's last step."""
        return dict(self._load)

    def shutdown(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the child (its unfinished requests end with an error) and wait for it."""
        try:
            self._send(("stop",))
        except (OSError, ValueError):
            pass
        self._stop_process(timeout)
        self._reader.join(timeout=5)

    # -- internals --------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        """Pickled on the caller's thread; only the write holds the lock (Connection.send does both
        under it, and a batch's lines submit from many threads at once)."""
        data = ForkingPickler.dumps(message)
        with self._send_lock:
            self._commands.send_bytes(data)

    def _wait_ready(self, timeout_s: float | None) -> EngineInfo:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._outputs.poll(1.0):
            if self._process.poll() is not None:
                raise EngineStartError(f"the engine process exited with code {self._process.returncode}")
            if deadline is not None and time.monotonic() > deadline:
                raise EngineStartError(f"the engine process did not load its model in {timeout_s} s")
        try:
            kind, payload = self._outputs.recv()
        except EOFError as exc:
            raise EngineStartError("the engine process exited while loading its model") from exc
        if kind != "ready":
            raise EngineStartError(payload)
        return payload  # type: ignore[no-any-return]

    def _read_outputs(self) -> None:
        """Give each step's outputs to their handles: decoded here when a handle has a delta callback
        (push), else queued for the thread that reads its events (pull)."""
        try:
            while True:
                kind, items, load = self._outputs.recv()
                if kind != "outputs":
                    continue
                self._load = load
                items.sort(key=lambda item: not item[4])  # finished ones first: their jobs store results
                for request_id, tokens, timestamps, error, finished in items:
                    handle = self._handles.get(request_id)
                    if handle is None:  # forgotten or dropped: nobody reads it
                        self._progress.pop(request_id, None)
                        continue
                    progress = self._progress.setdefault(request_id, _Progress())
                    progress.timestamps.extend(timestamps)  # before the tokens: a reader sees both or fewer
                    progress.tokens.extend(tokens)
                    if finished or error is not None:
                        del self._progress[request_id]
                    output = RemoteOutput(progress.tokens, progress.timestamps, error, finished)
                    if handle.on_delta is None:
                        handle.outputs.put(output)  # decoded by the thread that reads the events
                        continue
                    try:
                        handle.push(output)
                    except Exception as exc:  # one request's text, not the other requests' thread
                        log.exception("request %s: decoding its output failed", request_id)
                        handle.fail(f"decoding the output failed: {type(exc).__name__}: {exc}")
        except (EOFError, OSError):
            pass  # the child exited: handles still waiting end with an error (see RequestHandle)
        finally:
            self._alive = False

    def _stop_process(self, timeout: float) -> None:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:  # it ignores SIGTERM (see main)
            log.warning("engine process %s still runs after %.0f s; killing it", self._process.pid, timeout)
            self._process.kill()
            self._process.wait(10)
        self._commands.close()


# -- the child --------------------------------------------------------------------------------


class _OutputForwarder:
    """In the child: sends each decode step's outputs to the worker in one message.

    transformers' output router calls `call_soon_threadsafe` once per step with a function that runs
    every request's handler; the handlers collect, and the message goes when that function returns."""

    def __init__(self, connection: Connection, engine: Any) -> None:
        self.connection = connection
        self.engine = engine
        self.sent: dict[str, int] = {}  # request id -> tokens already sent
        self.pending: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        with self.lock:
            callback(*args)
            self.flush()

    def on_output(self, output: Any) -> None:
        try:
            self._collect(output)
        except Exception:  # never into transformers' generation loop, which would stop for every request
            log.exception("request %s: could not forward its output", output.request_id)

    def _collect(self, output: Any) -> None:
        tokens = list(output.generated_tokens)
        start = self.sent.get(output.request_id, 0)
        timestamps = list(output.timestamps or [])[start : len(tokens)]
        finished = bool(output.is_finished())
        error = None if output.error is None else str(output.error)
        if finished or error is not None:
            self.sent.pop(output.request_id, None)
        else:
            self.sent[output.request_id] = len(tokens)
        self.pending.append((output.request_id, tokens[start:], timestamps, error, finished))

    def reject(self, request_id: str, message: str) -> None:
        with self.lock:
            self.pending.append((request_id, [], [], message, True))
            self.flush()

    def forget(self, request_id: str) -> None:
        with self.lock:
            self.sent.pop(request_id, None)

    def flush(self) -> None:
        if self.pending:
            items, self.pending = self.pending, []
            self.connection.send(("outputs", items, self.engine.load()))


def main(argv: list[str]) -> None:
    """`python -m engine.process <commands fd> <outputs fd> <worker pid>`: the spec comes first on commands.

    SIGINT and SIGTERM are ignored: the worker stops this process when it shuts down (after its
    running jobs, in a warm shutdown), and the end of its pipe says when the worker died. A supervisor
    that signals every process of the worker's cgroup therefore cannot take the engine from under a
    warm shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # the worker's pid as it started us: one killed before this line leaves us with another parent already
    parent = int(argv[2]) if len(argv) > 2 else os.getppid()
    commands, outputs = Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False)
    status = 0
    try:
        serve_engine(commands, outputs, commands.recv(), parent)
    except (EOFError, OSError):
        status = 0  # the worker went away (before the spec, or as we told it "ready"): nobody to serve
    except BaseException:
        log.exception("the engine process failed")
        status = 1
    finally:
        # however serve_engine ended, the process ends with it: no thread the engine left (a generation
        # loop, torch's pool) may keep a process nobody talks to alive
        logging.shutdown()
        os._exit(status)


def _exit_with_parent(parent: int) -> None:
    """Leave as soon as the worker is gone, even while still loading a model (minutes, for big ones)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def serve_engine(commands: Connection, outputs: Connection, spec: EngineSpec, parent: int) -> None:
    """Load the model, then serve commands until told to stop or the worker goes."""
    if spec.nice > 0:
        os.nice(spec.nice)  # before any thread starts: the generation thread and torch's pool inherit it
    os.environ["GPTOSS_CPU_NICE"] = str(spec.nice)  # what the Engine gives its pool: the same (cpu_priority)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    logging.basicConfig(level=logging.INFO, format=f"[engine {spec.profile}] %(levelname)s %(message)s")
    log.info("OpenMP: %s", ", ".join(f"{name}={os.environ.get(name, '-')}" for name in OPENMP_VARIABLES))
    # the model loads here (seconds to minutes), after the nice and the parent watch are set
    from engine.startup import start_profile_engine

    try:
        engine, load_seconds = start_profile_engine(spec.profile_spec(), Path(spec.cache_dir))
    except Exception as exc:
        log.exception("loading %s failed", spec.model)
        outputs.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    info = EngineInfo(
        engine.tags,
        engine.tokenizer,
        engine.is_harmony,
        engine.max_context,
        frozenset(engine.eos_ids),
        load_seconds,
    )
    outputs.send(("ready", info))
    forwarder = _OutputForwarder(outputs, engine)
    try:
        while engine.is_running():
            if not commands.poll(0.5):
                continue
            command = commands.recv()
            if command[0] == "submit":
                _, request_id, input_ids, request = command
                try:
                    engine.add_prepared(request_id, input_ids, request, forwarder.on_output, forwarder)
                except Exception as exc:
                    forwarder.reject(request_id, f"{type(exc).__name__}: {exc}")
            elif command[0] == "cancel":
                engine.drop(command[1])
                forwarder.forget(command[1])
            elif command[0] == "stop":
                break
    except (EOFError, OSError):
        pass  # the worker is gone
    finally:
        engine.shutdown()


if __name__ == "__main__":  # run main from the importable module: what it pickles must name that module
    from engine import process as engine_process

    engine_process.main(sys.argv[1:])
