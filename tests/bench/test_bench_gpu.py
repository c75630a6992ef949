"""bench/gpu.py runs on CPU at the tiny preset (how CI checks the script a GPU run depends on) and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_on_cpu_at_the_tiny_preset_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--preset", "tiny", "--compile-backend",
           "aot_eager", "--official-steps", "3", "--repeats", "1", "--batch", "2", "--train-steps", "2",
           "--train-warmup", "1", "--videos", "2", "--encoder", "ViT-S-32", "--decode-workers", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["preset"] == "tiny" and r["skipped"] == []
    gen = r["generation"]
    for key in ("official", "eager_fp32_b1", "eager_fp32_batch", "auto_batch", "auto_b1", "fast_b1", "fast_batch"):
        assert gen[key]["s_per_clip"] > 0, key
    assert gen["fast_b1"]["first_call_s"] > 0 and gen["official"]["steps"] == 3
    m = gen["match"]
    # CPU fast = compile at the auto precision: fp32, or bf16 where the CPU has it natively (AVX512-BF16 / AMX)
    tol = 1e-3 if gen["accel_fast"]["precision"] == "fp32" else 0.1  # bf16 keeps 8 bits of mantissa
    assert m["fast_latent_rel"] < tol and m["seed_to_seed_latent_rel"] > 10 * tol, (gen["accel_fast"], m)
    for key in ("eager_fp32", "naive_bf16", "fast"):
        assert r["training"][key]["samples_per_s"] > 0, key
    f = r["features"]
    assert f["frames"] > 0 and min(f["baseline_frames_per_s"], f["fast_frames_per_s"]) > 0
    assert r["targets"].startswith("not checked")
