# `scaledown bench latency` on a tiny model with a short sweep writes valid JSON and a PNG plot.
import json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_short_latency_sweep_writes_json_and_png(tmp_path, capsys):
    from scaledown.cli.main import main
    out = tmp_path / "latency"
    code = main(["bench", "latency", "--output", str(out), "--hidden_size", "64", "--num_layers", "4",
                 "--num_heads", "4", "--num_kv_heads", "2", "--intermediate_size", "128", "--documents", "1,3",
                 "--batch_sizes", "1,2", "--document_tokens", "32", "--compression_rate", "8",
                 "--generated_tokens", "3", "--repeats", "2", "--threads", "1"])
    assert code == 0
    report = json.loads((out / "latency.json").read_text())
    assert report["model"]["compressor_layers"] == 1            # a quarter of 4 layers
    assert report["model"]["num_memory_tokens"] == 4            # 32 tokens / 8
    assert report["settings"]["documents"] == [1, 3] and report["environment"]["threads"] == 1
    points = {(r["batch_size"], r["documents"]) for r in report["results"]}
    assert points == {(1, 1), (1, 3), (2, 1), (2, 3)}
    for r in report["results"]:
        for path in ("compressed", "uncompressed"):
            p = r[path]
            assert len(p["runs"]) == 2 and p["seconds_per_batch"] > 0
            assert abs(p["queries_per_second"] * p["seconds_per_batch"] - r["batch_size"]) < 1e-6
            assert abs(p["ms_per_query"] - 1000 * p["seconds_per_batch"] / r["batch_size"]) < 1e-6
        assert r["speedup"] > 0
        # what the generator reads: 4 memory slots instead of 32 document tokens per document
        assert r["prompt_tokens"]["text"] - r["prompt_tokens"]["memory"] == r["documents"] * (32 - 4)
    assert (out / "latency.png").read_bytes()[:8] == PNG_MAGIC
    assert "speed-up" in capsys.readouterr().out


def test_bad_sweep_values_are_refused(capsys):
    from scaledown.cli.main import main
    assert main(["bench", "latency", "--documents", "1,x"]) == 2
    assert "comma-separated list of integers" in capsys.readouterr().err
    assert main(["bench", "nope"]) == 2


def test_each_timed_call_is_synchronised_before_and_after():
    """GPU kernels are queued asynchronously: the clock must start after earlier work drained and stop after this
    call's work drained. A stand-in device wait (a sleep, as pending kernels would cost) shows which side counts."""
    import time
    import torch
    from scaledown.evaluation import latency
    settings = latency.LatencySettings(document_tokens=32, compression_rate=8, generated_tokens=2)
    shape = latency.BenchModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    model = latency.build_bench_model(shape, settings)
    rows = latency.bench_rows(model, 1, 1)
    waits = []

    def pending_work(device):   # the first wait is earlier work (not ours), the second this call's own
        waits.append(device)
        time.sleep(2.0 if len(waits) == 1 else 0.5)

    seconds = latency.answer_seconds(model, rows, "memory", 2, sync=pending_work)
    assert waits == [torch.device("cpu"), torch.device("cpu")]
    assert 0.5 <= seconds < 2.0
    assert latency.answer_seconds.__defaults__[-1] is latency.synchronize
