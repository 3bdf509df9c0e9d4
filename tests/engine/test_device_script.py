"""The prepared device run (bench/device_check.py) works end to end before a GPU is lent: its CPU dry run
writes the MXFP4 checkpoint, runs the engine child process on it and prints the summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.checkpoints import load_weights
from tests.support.paths import REPO_ROOT


def test_the_cpu_dry_run_prints_every_summary_line(tmp_path: Path) -> None:
    model_dir, out = tmp_path / "model", tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "bench/device_check.py",
            "--dry-run-cpu",
            "--model-dir",
            str(model_dir),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    block = run.stdout.split("==== device check summary ====")[1].split("==== end ====")[0]

    assert "tokenizer: o200k (quicktok-v1)" in block
    for mode in ("greedy", "t1"):
        for prompt in ("short", "long"):
            row = rf"engine tok/s, {prompt} prompt \(4 tokens\), {mode}: 1: [\d.]+, 8: [\d.]+, 32: [\d.]+"
            assert re.search(row, block)
    assert re.search(r"single-stream engine / plain generate: [\d.]+ \(target >= 0.9\) (PASS|FAIL)", block)
    assert re.search(r"32 concurrent / single stream: [\d.]+ \(target >= 8.0\) (PASS|FAIL)", block)
    assert "MXFP4 path: dequantized to bf16" in block
    assert "peak GPU memory: n/a (no CUDA device)" in block

    report = json.loads((out / "device_check.json").read_text())
    assert report["logits"]["argmax_agree"] == report["logits"]["steps"] == 4
    assert report["logits"]["max_abs_diff"] < 1e-3
    assert all(run and not run["errors"] for run in report["engine"].values())
    stored = load_weights(model_dir)
    assert "model.layers.1.mlp.experts.down_proj_blocks" in stored
    assert not [name for name in stored if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]
