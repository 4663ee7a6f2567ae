# The GPU check (benchmarks/gpu_check.py) rehearsed on CPU end to end: every part runs and passes its checks.
import json
import os
import subprocess
import sys

import pytest

from deepspeed_runs import ROOT, require_deepspeed

SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def _rehearse(tmp_path, parts: str) -> tuple[dict, str]:
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--out", str(out), "--work", str(work),
                           "--parts", parts, "--timeout", "900"], env=env, capture_output=True, text=True, timeout=3000, cwd=ROOT)
    report = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return report, log


def test_gpu_check_rehearsal_one_process_parts(tmp_path):
    """environment, bf16 folder generator, one-process training, host syncs and bench latency (about 1 minute)."""
    report, log = _rehearse(tmp_path, "environment,generator,train,syncs,latency")
    parts = ("environment", "generator", "train", "syncs", "latency")
    assert all(report[p]["ok"] and report[p]["error"] is None for p in parts), {p: report[p] for p in parts}
    assert report["all_ok"] is True and "zero3" not in report
    assert report["generator"]["checks"]["saved_in_bf16"]
    train = report["train"]
    for name in ("optimizer_params_fp32_every_phase", "parameters_on_cpu", "loss_falls", "compressor_weights_move",
                 "flops_count_matches_hand_count"):
        assert train["checks"][name] is True, name
    # warm-up (the generator trains) and compression phases both stepped float32 weights
    assert len(train["figures"]["optimizer_dtypes_per_phase"]) == 2
    throughput = train["figures"]["throughput"]
    assert throughput["steady_steps"] >= 3 and throughput["tokens_per_sec"] > 0
    assert abs(throughput["scaledown_over_hand"] - 1) < 0.02
    syncs = report["syncs"]["figures"]
    assert syncs["steady_steps"] == [3, 4, 5, 6, 7] and syncs["logging_steps"] == [4]
    assert syncs["syncs_per_step"] > 0
    # each sync is attributed to the innermost scaledown/ frame, e.g. the backend's float() of the step's losses
    assert any(t["where"].startswith("scaledown/training/backends/") for t in syncs["top_locations"])
    points = report["latency"]["figures"]["points"]
    assert [p["documents"] for p in points] == [1, 3] and all(p["compressed_ms_per_query"] > 0 for p in points)
    assert (tmp_path / "out" / "latency.json").exists()
    for p in parts:
        assert f"\n{p:<12} PASS" in log, p


@pytest.mark.slow
def test_gpu_check_rehearsal_zero3(tmp_path):
    """1-rank ZeRO-3 under torchrun: checkpointing, evaluation with generation, save, --resume_from auto at step 4,
    --init_compressor_from a saved run (three DeepSpeed processes: several minutes on 2 shared cores)."""
    require_deepspeed()
    report, _ = _rehearse(tmp_path, "generator,zero3")
    zero3 = report["zero3"]
    assert zero3["ok"] and zero3["error"] is None, zero3
    for name in ("run_a_exit_0", "cpu_accelerator_gloo", "run_a_six_finite_losses", "evaluation_generated",
                 "checkpoints_saved", "resume_exit_0", "resumed_at_step_4", "resume_finished_step_6",
                 "resumed_losses_match_uninterrupted", "init_compressor_exit_0", "init_compressor_loaded"):
        assert zero3["checks"][name] is True, name
