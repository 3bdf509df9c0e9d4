"""The release gate on the demo model (SmolLM2-135M on this CPU): a short run meets the personal SLO."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask

from gate.cli import main as gate_main
from tests.support.gate import assert_valid_png
from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import live_workers, worker_answers_ping
from tests.support.services import migrate

GATE_DEMO_REDIS_DB = 5
DEMO_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_api(test_dir: Path, redis_base_url: str) -> Iterator[tuple[Flask, str]]:
    """The API on a live port and a latency_first worker serving the demo model."""
    folder = test_dir / "gate-demo"
    folder.mkdir(exist_ok=True)
    profiles = folder / "profiles.toml"
    profiles.write_text(
        '[profiles.latency_first]\nmodel = "demo"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 8\nmax_tokens = 512\ntemperature = 0.0\n"
    )
    database_url = f"sqlite:///{folder / 'gate.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{GATE_DEMO_REDIS_DB}"
    demo_data = REPO_ROOT / ".data"  # the worker shares the converted demo model with `make run`
    with live_workers(
        folder, profiles, database_url, redis_url, demo_data, ("latency_first",),
        env={"GPTOSS_WORKER_METRICS_PORT": "0"}, api_data_dir=folder, ready=worker_answers_ping,
    ) as (app, _):  # fmt: skip
        with serve(app) as url:
            warm_up = httpx.post(f"{url}/v1/jobs", json={"prompt": "Hi", "max_tokens": 4}).json()
            with httpx.stream("GET", f"{url}/v1/jobs/{warm_up['id']}/events", timeout=120) as events:
                next(line for line in events.iter_lines() if line.startswith("event: done"))
            yield app, url


def test_a_short_gate_run_on_the_demo_model_passes_the_personal_slo(
    demo_api: tuple[Flask, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = demo_api
    status = gate_main(
        ["--url", url, "gate", "--profile", "latency_first", "--slo", "personal", "--duration", "10",
         "--rate", "0.5", "--seed", "3", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    run_id = re.search(r"gate (gate_[0-9a-f]+): PASSED - personal SLO on latency_first", out).group(1)  # type: ignore[union-attr]
    for metric in ("achieved_qps", "p95_ttft_s", "p95_e2e_s", "error_rate"):
        assert re.search(rf"ok    {metric} \d+\.\d+ (<=|>=) \d+\.\d+", out), out

    report = json.loads((tmp_path / f"{run_id}.json").read_text())
    figures = report["figures"]
    assert report["model"]["model_id"] == DEMO_MODEL_ID and report["passed"] and report["failures"] == []
    assert figures["requests"] == 5 and figures["succeeded"] == 5 and figures["error_rate"] == 0.0
    assert figures["achieved_qps"] == 0.5 and figures["completion_tokens"] > 0 and figures["tokens_per_s"] > 0
    for latency in ("ttft_s", "e2e_s"):
        row = figures[latency]
        assert 0 < row["p50"] <= row["p95"] <= row["p99"] <= row["max"] and row["samples"] == 5
    assert figures["ttft_s"]["p95"] < 10 and figures["e2e_s"]["p95"] < 30
    assert set(figures["by_prompt"]) == {"short_chat", "code_question", "long_answer"}
    assert all(sample["ok"] and sample["ttft_s"] < sample["e2e_s"] for sample in report["samples"])

    markdown = (tmp_path / f"{run_id}.md").read_text().splitlines()
    assert markdown[0] == "# Release gate PASSED: `personal` SLO on `latency_first`"
    model = report["model"]
    assert (
        f"- model: {DEMO_MODEL_ID} (engine {model['engine']}, {model['model_size']}, {model['gpu_mode']})"
        in markdown
    )
    for metric, limit in (("achieved_qps", ">= 0.3"), ("p95_ttft_s", "<= 10.0"), ("p95_e2e_s", "<= 30.0")):
        assert any(
            line.startswith(f"| {metric} | ") and line.endswith(f"| {limit} | pass |") for line in markdown
        )
    assert any(line.startswith("| time to first token | ") for line in markdown)
    assert f"![Latency over time]({run_id}.png)" in markdown
    assert_valid_png((tmp_path / f"{run_id}.png").read_bytes())

    stored = httpx.get(f"{url}/v1/gate/runs/{run_id}").json()
    assert stored["passed"] and stored["report"] == report
    assert f"![Latency over time]({url}/v1/gate/runs/{run_id}/plot.png)" in stored["markdown"]
    assert_valid_png(httpx.get(f"{url}{stored['plot_url']}").content)
