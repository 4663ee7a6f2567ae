# Released OSCAR checkpoints (NAVER's COCOM format): native load vs the reference's golden values, errors, export.
import json
import os
import shutil
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
GOLDEN = os.path.join(os.path.dirname(HERE), "assets", "oscar_golden")
NAMES = ("oscar-llama", "oscar-nlayers")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The tiny released-format folders the golden values were computed on (rebuilt deterministically)."""
    from oscar_released_tiny import build_all
    return build_all(str(tmp_path_factory.mktemp("oscar_released")))


def _golden(name, dtype):
    from safetensors.torch import load_file
    with open(os.path.join(GOLDEN, f"answers-{dtype}.json")) as f:
        meta = json.load(f)
    return meta, load_file(os.path.join(GOLDEN, f"{name}-{dtype}.safetensors"))


def _outputs(model, meta):
    """What the golden file holds, computed by ScaleDown: inputs, memory vectors, prompt logits, greedy answers."""
    rows = [{"query": q, "documents": d} for q, d in zip(meta["questions"], meta["documents"])]
    batch = model.inputs.collate(rows, with_answers=False)
    with torch.no_grad():
        memory = model.compress(meta["questions"], meta["documents"]).memory.flatten(0, 1).float()
        embeds, _ = model.input_embeddings(batch)
        logits = model.generator(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits.float()
    answers = model.answer(meta["questions"], meta["documents"], max_new_tokens=8)
    return batch, memory, logits, answers


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_load_matches_reference_golden_values(released, name, dtype):
    from scaledown import ScaleDownModel
    meta, gold = _golden(name, dtype)
    model = ScaleDownModel.from_pretrained(released[name], dtype=getattr(torch, dtype)).eval()
    assert model.config.prompt_format == "oscar"
    batch, memory, logits, answers = _outputs(model, meta)
    n = model.config.num_memory_tokens
    # the inputs, token for token: compressor text (padding included) and generator prompt
    enc_ids, enc_mask = batch["compressor_input_ids"].flatten(0, 1), batch["compressor_attention_mask"].flatten(0, 1)
    assert torch.equal(enc_mask, gold["enc_attention_mask"][:, :-n])
    assert torch.equal(enc_ids * enc_mask, gold["enc_input_ids"][:, :-n] * enc_mask)
    assert torch.equal(batch["attention_mask"], gold["dec_attention_mask"])
    assert torch.equal(batch["input_ids"] * batch["attention_mask"], gold["dec_input_ids"] * gold["dec_attention_mask"])
    tail = logits[:, -gold["logits_tail"].shape[1]:]
    if dtype == "float32":   # same arithmetic: equal up to float32 rounding; the same greedy answers
        torch.testing.assert_close(memory, gold["memory"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(tail, gold["logits_tail"], rtol=1e-4, atol=1e-3)
        assert answers == [a.strip() for a in meta[name]["answers"]]
    else:   # bfloat16 (the reference's own dtype): rounding differs between transformers 4.46 and 5, so loosely
        scale = gold["memory"].abs().max()
        assert (memory - gold["memory"]).abs().max() <= 0.1 * scale
        agree = (tail.argmax(-1) == gold["logits_tail"].argmax(-1)).float().mean()
        assert agree >= 0.8, f"greedy next tokens agree at only {agree:.0%} of the prompt's last positions"


def test_query_independent_compressor_inputs_match_reference(released):
    from scaledown import ScaleDownModel
    meta, gold = _golden("oscar-llama", "float32")
    model = ScaleDownModel.from_pretrained(released["oscar-llama"])
    rows = [{"query": q, "documents": d} for q, d in zip(meta["questions"], meta["documents"])]
    batch = model.inputs.collate(rows, with_answers=False, compress_query=False)
    ids, mask = batch["compressor_input_ids"].flatten(0, 1), batch["compressor_attention_mask"].flatten(0, 1)
    expected = gold["enc_qi_input_ids"][:, :-model.config.num_memory_tokens]
    assert torch.equal(ids * mask, expected * mask)


def _memory_and_logits(model, meta):
    _, memory, logits, answers = _outputs(model.eval(), meta)
    return memory, logits, answers


@pytest.mark.parametrize("name", NAMES)
def test_convert_to_scaledown_and_back_keeps_every_tensor(released, name, tmp_path):
    from scaledown import ScaleDownModel
    from scaledown.checkpoint import convert
    meta, gold = _golden(name, "float32")
    convert("oscar", "hf", released[name], str(tmp_path / "hf"))
    model = ScaleDownModel.from_pretrained(str(tmp_path / "hf"))          # a ScaleDown folder now
    memory, logits, answers = _memory_and_logits(model, meta)
    torch.testing.assert_close(memory, gold["memory"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[:, -6:], gold["logits_tail"], rtol=1e-4, atol=1e-3)
    assert answers == [a.strip() for a in meta[name]["answers"]]
    result = convert("hf", "oscar", str(tmp_path / "hf"), str(tmp_path / "back"))
    for file in ("adapters.pth", "decoder_first_last_layers.pth", "compressor/compressor.pth", "compressor/mlp.pth"):
        src, dst = os.path.join(released[name], file), tmp_path / "back" / file
        assert os.path.exists(src) == dst.exists(), file
        if not dst.exists():
            continue
        a, b = torch.load(src, weights_only=True), torch.load(dst, weights_only=True)
        if file == "adapters.pth":
            assert set(a) == set(b) == {"decoder_adapter"}
            a, b = a["decoder_adapter"], b["decoder_adapter"]
        assert set(a) == set(b), file
        for key in a:
            if key != "custom_model.lm_head.weight":   # the N-layers compressor's unused head is not kept
                assert torch.equal(a[key].float(), b[key].float()), (file, key)
    with open(os.path.join(released[name], "config.json")) as f:
        original = json.load(f)
    with open(tmp_path / "back" / "config.json") as f:
        written = json.load(f)
    for field in ("doc_max_length", "compr_rate", "compr_n_layers", "compr_use_mlp", "lora_r", "sep",
                  "different_mem_tokens", "compr_mlp_hidden_dim", "lora", "model_type"):
        assert written[field] == original[field], field
    # the fixture's bases are local folders: each is named with the flag that writes a hub id instead
    assert result.notes and all("is the local folder" in n and "_model_name" in n for n in result.notes), result.notes
    # an existing destination is the shared rule's: refused without overwrite, replaced whole with it
    from scaledown.errors import ConfigError
    with pytest.raises(ConfigError, match="--overwrite"):
        convert("hf", "oscar", str(tmp_path / "hf"), str(tmp_path / "back"))
    (tmp_path / "back" / "stale.txt").write_text("x")
    convert("hf", "oscar", str(tmp_path / "hf"), str(tmp_path / "back"), overwrite=True)
    assert not (tmp_path / "back" / "stale.txt").exists() and (tmp_path / "back" / "adapters.pth").exists()


def test_native_model_exports_to_released_layout_and_reads_back(released):
    """A ScaleDown model (causal-LM compressor, lora_alpha != 2r, RR head) written in the released format: ScaleDown's
    reader gives back the same compressor and generator functions (the prompt format then is the released one)."""
    from oscar_released_tiny import native_model
    from scaledown import ScaleDownModel
    from scaledown.checkpoint.oscar_export import write_released
    source = native_model(released)
    notes = write_released(source, os.path.join(os.path.dirname(released["export-native"]), "export-again"))
    assert any("lora_alpha=16" in n for n in notes) and any("reranking" in n for n in notes)
    back = ScaleDownModel.from_pretrained(released["export-native"]).eval()
    ids = torch.tensor([[1, 299, 264, 409, 89, 315, 280, 34]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(back.compressor(ids, mask)[0], source.compressor(ids, mask)[0])
        torch.testing.assert_close(back.generator(input_ids=ids).logits[..., :1900],
                                   source.generator(input_ids=ids).logits[..., :1900], rtol=1e-4, atol=1e-4)


def test_export_read_by_reference_class_equals_scaledown_read(released):
    """The reference COCOM.from_pretrained loaded ScaleDown's export once (golden export-native-float32); ScaleDown's
    own reader of the same folder computes the same inputs, memory vectors, logits and answers."""
    from scaledown import ScaleDownModel
    meta, gold = _golden("export-native", "float32")
    model = ScaleDownModel.from_pretrained(released["export-native"]).eval()
    batch, memory, logits, answers = _outputs(model, meta)
    n = model.config.num_memory_tokens
    assert torch.equal(batch["compressor_attention_mask"].flatten(0, 1), gold["enc_attention_mask"][:, :-n])
    assert torch.equal(batch["input_ids"] * batch["attention_mask"], gold["dec_input_ids"] * gold["dec_attention_mask"])
    torch.testing.assert_close(memory, gold["memory"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[:, -6:], gold["logits_tail"], rtol=1e-4, atol=1e-3)
    assert answers == [a.strip() for a in meta["export-native"]["answers"]]


def _malformed(released, tmp_path, name="oscar-llama"):
    folder = tmp_path / name
    shutil.copytree(released[name], folder)
    return folder


def _edit_config(folder, **changes):
    path = folder / "config.json"
    values = json.loads(path.read_text())
    values.update(changes)
    path.write_text(json.dumps(values))


def _edit_pth(folder, file, edit):
    path = folder / file
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize("kind, names", [
    ("missing adapters.pth", ["adapters.pth", "missing"]),
    ("missing mlp.pth", ["mlp.pth", "missing"]),
    ("compr_rate vs memory rows", ["decoder_first_last_layers.pth", "compr_rate=4", "8 memory tokens"]),
    ("compr_rate vs compressor memory rows", ["compressor.pth", "compr_rate=4", "8 memory tokens"]),
    ("doc_max_length vs memory rows", ["doc_max_length=64", "memory"]),
    ("lora_r vs adapters", ["adapters.pth", "lora_r=8", "rank [4]"]),
    ("mlp width", ["mlp.pth", "compr_mlp_hidden_dim=64"]),
    ("pisco", ["PISCO", "compr_model_name"]),
    ("damaged pth", ["decoder_first_last_layers.pth", "weights_only=True"]),
    ("n_layers count", ["compressor.pth", "compr_n_layers=2"]),
    # found by a fresh user: these raised AttributeError / RuntimeError / TypeError tracebacks
    ("non-tensor rows", ["decoder_first_last_layers.pth", "is a list, not a tensor"]),
    ("compressor weight shape", ["compressor.pth", "size mismatch"]),
    ("compr_rate as text", ["compr_rate='4'", "whole number"]),
    # found by a fresh user: a damaged config.json read as "not a model folder"; no value to write instead
    ("config.json not JSON", ["config.json", "cannot be read as JSON"]),
    ("config.json missing", ["config.json is missing"]),
    ("compr_rate as float", ["compr_rate=8.0", '"compr_rate": 8.']),
    # found by a second fresh user: an AttributeError traceback / "48 is not a multiple of -16"
    ("config.json a list", ["config.json holds a JSON list"]),
    ("compr_rate negative", ["compr_rate=-8", "positive whole number"]),
])
def test_malformed_released_folder_names_file_and_field(released, tmp_path, kind, names):
    from scaledown import ScaleDownModel
    from scaledown.errors import CheckpointError
    shared_mem = kind in ("n_layers count", "compr_rate vs compressor memory rows")   # <MEM> x l: rows fixed
    folder = _malformed(released, tmp_path, "oscar-nlayers" if shared_mem else "oscar-llama")
    if kind == "missing adapters.pth":
        (folder / "adapters.pth").unlink()
    elif kind == "missing mlp.pth":
        (folder / "compressor" / "mlp.pth").unlink()
    elif kind in ("compr_rate vs memory rows", "compr_rate vs compressor memory rows"):
        _edit_config(folder, compr_rate=4)
    elif kind == "doc_max_length vs memory rows":
        _edit_config(folder, doc_max_length=64)
    elif kind == "lora_r vs adapters":
        _edit_config(folder, lora_r=8)
    elif kind == "mlp width":
        _edit_config(folder, compr_mlp_hidden_dim=64)
    elif kind == "pisco":
        _edit_config(folder, compr_model_name=None, training_form="both_separately")
    elif kind == "damaged pth":
        data = (folder / "decoder_first_last_layers.pth").read_bytes()
        (folder / "decoder_first_last_layers.pth").write_bytes(data[: len(data) // 2])
    elif kind == "n_layers count":
        _edit_config(folder, compr_n_layers=2)
    elif kind == "non-tensor rows":
        _edit_pth(folder, "decoder_first_last_layers.pth", lambda state: state.update({next(iter(state)): [1, 2]}))
    elif kind == "compressor weight shape":
        def widen(state):
            key = next(k for k in state if k.endswith("up_proj.weight"))
            state[key] = torch.zeros(state[key].shape[0] + 6, state[key].shape[1])
        _edit_pth(folder, "compressor/compressor.pth", widen)
    elif kind == "compr_rate as text":
        _edit_config(folder, compr_rate="4")
    elif kind == "config.json not JSON":
        (folder / "config.json").write_text('{"decoder_model_name": "x", ')
    elif kind == "config.json missing":
        (folder / "config.json").unlink()
    elif kind == "compr_rate as float":
        _edit_config(folder, compr_rate=8.0)
    elif kind == "config.json a list":
        (folder / "config.json").write_text("[1, 2]")
    elif kind == "compr_rate negative":
        _edit_config(folder, compr_rate=-8)
    with pytest.raises(CheckpointError) as err:
        ScaleDownModel.from_pretrained(str(folder))
    for text in names:
        assert text in str(err.value), (kind, str(err.value))


def test_convert_cli_reports_malformed_folder_without_traceback(released, tmp_path, capsys):
    from scaledown.cli.main import main
    folder = _malformed(released, tmp_path)
    _edit_config(folder, lora_r=8)
    assert main(["convert", "--from", "oscar", "--to", "hf", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "lora_r=8" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["convert", "--from", "oscar", "--to", "nxd", str(folder), str(tmp_path / "out")]) == 2
    assert "--to hf" in capsys.readouterr().err


def test_train_checks_released_shapes_before_data(released, tmp_path, capsys, monkeypatch):
    """A released folder whose weights disagree with config.json stops `scaledown train --init_from` before any data
    is prepared or run folder written (the shapes are read memory-mapped, not after the data as before)."""
    import scaledown.cli.train  # noqa: F401  (imported before the probe: it binds load_datasets by name)
    from scaledown.cli import training_run
    from scaledown.cli.main import main

    def no_data_yet(*args, **kwargs):
        raise AssertionError("the data was prepared before the released folder's shapes were checked")
    monkeypatch.setattr(training_run, "load_datasets", no_data_yet)
    folder = _malformed(released, tmp_path)
    _edit_config(folder, lora_r=8)
    out = tmp_path / "run"
    assert main(["train", "--init_from", str(folder), "--max_steps", "1", "--generator_warmup_ratio", "0",
                 "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lora_r=8" in err and "adapters.pth" in err and "Traceback" not in err, err
    assert not out.exists()


def test_converted_released_folder_keeps_its_system_prompt(released, tmp_path):
    """--init_from a `convert --from oscar` copy trains with the released system prompt it was saved with (before:
    the run's preset prompt replaced it), unless --system_prompt is given."""
    from scaledown import ScaleDownModel
    from scaledown.checkpoint import convert
    from scaledown.cli.train import train_main
    from scaledown.models.oscar_prompt import RELEASED_SYSTEM_PROMPT
    folder = str(tmp_path / "converted")
    convert("oscar", "hf", released["oscar-llama"], folder)
    flags = ["--init_from", folder, "--max_steps", "1", "--batch_size", "2", "--micro_batch_size", "2",
             "--num_train_examples", "4", "--num_eval_examples", "2", "--eval_max_examples", "0",
             "--generator_warmup_ratio", "0", "--save_steps", "0"]
    assert train_main([*flags, "--output_dir", str(tmp_path / "kept")]) == 0
    assert ScaleDownModel.from_pretrained(str(tmp_path / "kept" / "final")).config.system_prompt == \
        RELEASED_SYSTEM_PROMPT
    assert train_main([*flags, "--system_prompt", "Answer briefly.", "--output_dir", str(tmp_path / "own")]) == 0
    assert ScaleDownModel.from_pretrained(str(tmp_path / "own" / "final")).config.system_prompt == "Answer briefly."


@pytest.mark.parametrize("name", NAMES)
def test_training_continues_from_released_folder(released, tmp_path, capsys, name):
    """--init_from a released folder (local backend): the weights load, the RR head starts fresh with a note, the
    run trains and its final model keeps the released prompt format; the first forward equals the released model's."""
    from scaledown import ScaleDownModel
    from scaledown.cli.train import train_main
    out = tmp_path / "run"
    code = train_main(["--init_from", released[name], "--max_steps", "2", "--batch_size", "4",
                       "--micro_batch_size", "2", "--num_train_examples", "8", "--num_eval_examples", "2",
                       "--eval_max_examples", "2", "--generator_warmup_ratio", "0", "--output_dir", str(out)])
    assert code == 0
    assert "no reranking head" in capsys.readouterr().err
    trained = ScaleDownModel.from_pretrained(str(out / "final"))
    source = ScaleDownModel.from_pretrained(released[name])
    assert trained.config.prompt_format == "oscar" and trained.config.enable_reranking
    assert trained.compressor.rr_head is not None and source.compressor.rr_head is None
    changed = [n for n, p in trained.compressor.named_parameters()
               if "rr_" not in n and not torch.equal(p, dict(source.compressor.named_parameters())[n])]
    assert changed, "the compressor did not train"


def test_eval_puts_released_and_scaledown_models_in_one_table(released, tmp_path, capsys):
    from scaledown.checkpoint import convert
    from scaledown.cli.main import main
    convert("oscar", "hf", released["oscar-llama"], str(tmp_path / "converted"))
    assets = os.path.join(os.path.dirname(HERE), "assets", "kilt")
    out = tmp_path / "bench"
    code = main(["eval", "--model", released["oscar-nlayers"], str(tmp_path / "converted"), "--benchmark", "nq,popqa",
                 "--data_dir", assets, "--corpus", os.path.join(assets, "corpus.jsonl"), "--num_documents", "2",
                 "--max_examples", "2", "--max_new_tokens", "3", "--baselines", "--output", str(out),
                 "--no_progress"])
    printed = capsys.readouterr().out
    assert code == 0
    for label in ("oscar-nlayers", "converted"):
        metrics = json.loads((out / "nq" / label / "metrics.json").read_text())
        assert {"scaledown", "uncompressed", "no_docs"} <= set(metrics) and metrics["scaledown"]["n"] == 2
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| oscar-nlayers |")
            or line.startswith("| converted |")]
    assert len(rows) == 2 and "OSCAR-llama" in table and table in printed and "Metric: Match." in table
    summary = json.loads((out / "benchmarks.json").read_text())
    assert {"oscar-nlayers|scaledown", "converted|scaledown", "converted|no_docs"} <= set(summary["metrics"]["nq"])
    assert summary["tflops"]["oscar-nlayers|scaledown"] > 0


def test_bench_latency_reads_released_folder(released, tmp_path, capsys):
    from scaledown.cli.main import main
    code = main(["bench", "latency", "--model", released["oscar-llama"], "--documents", "1,2", "--batch_sizes", "1",
                 "--repeats", "1", "--warmup", "0", "--generated_tokens", "2", "--output", str(tmp_path / "lat")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "lat" / "latency.json").read_text())
    assert report["results"] and report["model"]["compressor_type"] == "causal_lm"
    assert report["model"]["compressor_layers"] == 2   # the released Llama backbone's, not num_compressor_layers


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["deepspeed", "torch"])
def test_two_ranks_continue_from_released_folder(released, tmp_path, backend):
    """--init_from a released folder under 2 real ranks (torchrun) of DeepSpeed ZeRO-3 and of the torch backend
    (FSDP2): the frozen embedding / head rows come out exactly as released (so they were loaded, not left
    partitioned-empty), the compressor moved a little."""
    import subprocess
    from safetensors.torch import load_file
    from deepspeed_runs import free_port, log_tail, require_deepspeed, run, zero3_config
    out, log = tmp_path / "out", str(tmp_path / "log")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(HERE))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    flags = ["--init_from", released["oscar-llama"], "--max_steps", "2", "--batch_size", "8", "--micro_batch_size",
             "4", "--num_eval_examples", "4", "--eval_max_examples", "2", "--generator_warmup_ratio", "0",
             "--output_dir", str(out)]
    if backend == "deepspeed":
        require_deepspeed()
        config = zero3_config(str(tmp_path / "z3.json"), stage3_param_persistence_threshold=0)
        proc = run("torchrun", 2, ["--deepspeed", config, *flags], env, log)
    else:
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                   "--master_port", str(free_port()), os.path.join(root, "launchers", "train_torch.py"),
                                   "--use_bf16", "false", *flags], env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=900, cwd=root)
    assert proc.returncode == 0, log_tail(log)
    assert "no reranking head" in log_tail(log, 100_000)
    base = load_file(str(out / "final" / "generator_base" / "model.safetensors"))
    rows = torch.load(os.path.join(released["oscar-llama"], "decoder_first_last_layers.pth"), weights_only=True)
    for key, value in rows.items():
        assert torch.equal(base[key].float(), value.float()), key
    comp = load_file(str(out / "final" / "compressor" / "model.safetensors"))
    source = torch.load(os.path.join(released["oscar-llama"], "compressor", "compressor.pth"), weights_only=True)
    moved = (comp["backbone.layers.0.mlp.up_proj.weight"].float() - source["layers.0.mlp.up_proj.weight"].float())
    assert 0 < moved.abs().max() < 0.05


def _hub_named(released, tmp_path):
    """oscar-llama as downloaded: config.json names its base models by hub id (this machine has no hub)."""
    folder = _malformed(released, tmp_path)
    _edit_config(folder, decoder_model_name="Qwen/Qwen2-7B-Instruct", compr_model_name="meta-llama/Llama-3.2-1B")
    bases = os.path.join(os.path.dirname(released["oscar-llama"]), "bases")
    return str(folder), ["--generator_path", os.path.join(bases, "generator-qwen2"),
                         "--compressor_path", os.path.join(bases, "compressor-llama")]


def _commands(folder, tmp_path):
    assets = os.path.join(os.path.dirname(HERE), "assets", "kilt")
    return {
        "train": ["train", "--init_from", folder, "--max_steps", "1", "--batch_size", "2", "--micro_batch_size", "2",
                  "--num_train_examples", "2", "--num_eval_examples", "2", "--eval_max_examples", "0",
                  "--generator_warmup_ratio", "0", "--output_dir", str(tmp_path / "run")],
        "eval": ["eval", "--model", folder, "--benchmark", "nq", "--data_dir", assets, "--corpus",
                 os.path.join(assets, "corpus.jsonl"), "--num_documents", "1", "--max_examples", "1",
                 "--max_new_tokens", "2", "--no_flops", "--output", str(tmp_path / "eval"), "--no_progress"],
        "bench": ["bench", "latency", "--model", folder, "--documents", "1", "--batch_sizes", "1", "--repeats", "1",
                  "--warmup", "0", "--generated_tokens", "1", "--output", str(tmp_path / "lat")],
    }


@pytest.mark.parametrize("command", ["train", "eval", "bench"])
def test_base_model_paths_for_hub_named_released_folder(released, tmp_path, capsys, command):
    """Every command reading a released folder takes --generator_path / --compressor_path (config.json names hub
    ids; offline they cannot load): without them, an error naming the field and the flag before any work; with only
    the generator's, the compressor's flag is named; with both, the command runs."""
    from scaledown.cli.main import main
    folder, flags = _hub_named(released, tmp_path)
    argv = _commands(folder, tmp_path)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--generator_path" in err and "decoder_model_name" in err and "Traceback" not in err, err
    assert main(argv + flags[:2]) == 2
    err = capsys.readouterr().err
    assert "--compressor_path" in err and "compr_model_name" in err and "Traceback" not in err, err
    assert main(argv + flags) == 0, capsys.readouterr().err
    made = {"train": tmp_path / "run" / "final", "eval": tmp_path / "eval" / "table.md",
            "bench": tmp_path / "lat" / "latency.json"}[command]
    assert made.exists()


def test_a_base_model_path_that_does_not_exist_is_named(released, tmp_path, capsys):
    """A mistyped --generator_path (or a folder config.json names) is a message naming it, not huggingface_hub's
    HFValidationError traceback (found by a fresh user)."""
    from scaledown.cli.main import main
    folder, flags = _hub_named(released, tmp_path)
    flags = [flags[0], "/models/Qwen2-7B-Instruct", *flags[2:]]
    assert main(["convert", "--from", "oscar", "--to", "hf", folder, str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert "/models/Qwen2-7B-Instruct" in err and "not an existing folder" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_export_names_base_models_as_asked_or_by_absolute_path(released, tmp_path, monkeypatch):
    """--to oscar writes --decoder_model_name / --compr_model_name (hub ids) into config.json; without them a local
    base folder is named by its absolute path (before: the relative path given, wrong from any other folder)."""
    from scaledown.cli.main import main
    monkeypatch.chdir(os.path.dirname(released["oscar-llama"]))
    bases = "bases"
    hf = str(tmp_path / "hf")
    assert main(["convert", "--from", "oscar", "--to", "hf", released["oscar-llama"], hf,
                 "--generator_path", os.path.join(bases, "generator-qwen2"),
                 "--compressor_path", os.path.join(bases, "compressor-llama")]) == 0
    assert main(["convert", "--from", "hf", "--to", "oscar", hf, str(tmp_path / "plain")]) == 0
    written = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert written["decoder_model_name"] == os.path.abspath(os.path.join(bases, "generator-qwen2"))
    assert written["compr_model_name"] == os.path.abspath(os.path.join(bases, "compressor-llama"))
    assert main(["convert", "--from", "hf", "--to", "oscar", hf, str(tmp_path / "named"), "--decoder_model_name",
                 "Qwen/Qwen2-7B-Instruct", "--compr_model_name", "meta-llama/Llama-3.2-1B-Instruct"]) == 0
    written = json.loads((tmp_path / "named" / "config.json").read_text())
    assert (written["decoder_model_name"], written["compr_model_name"]) == ("Qwen/Qwen2-7B-Instruct",
                                                                          "meta-llama/Llama-3.2-1B-Instruct")


def test_export_of_a_tiny_random_model_names_its_saved_base(tmp_path, capsys):
    """An untrained tiny-preset model: its random base cannot be rebuilt from its name, so the export says to pass
    the saved generator_base/ (before: "was trained (a generator warm-up)", wrong for a model never trained)."""
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.cli.main import main
    folder = tmp_path / "tiny"
    ScaleDownModel(ScaleDownConfig(preset="tiny", memory_norm=False)).save_pretrained(str(folder))
    assert main(["convert", "--from", "hf", "--to", "oscar", str(folder), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "generator_base" in err and "warm-up" not in err and "Traceback" not in err, err
    assert main(["convert", "--from", "hf", "--to", "oscar", str(folder), str(tmp_path / "b"), "--generator_path",
                 str(folder / "generator_base")]) == 0, capsys.readouterr().err


def test_base_model_paths_refused_without_released_folder(released, tmp_path, capsys):
    """The flags only mean something for a released folder: with a ScaleDown folder they are an error, not ignored."""
    from scaledown.checkpoint import convert
    from scaledown.cli.main import main
    convert("oscar", "hf", released["oscar-llama"], str(tmp_path / "converted"))
    folder, flags = _hub_named(released, tmp_path)
    for command, argv in _commands(str(tmp_path / "converted"), tmp_path).items():
        assert main(argv + flags) == 2, command
        err = capsys.readouterr().err
        assert "only apply to a released OSCAR folder" in err and "Traceback" not in err, (command, err)


@pytest.mark.nxd_double
@pytest.mark.parametrize("source", ["released", "converted"])
def test_nxd_continues_from_released_folder(released, tmp_path, source):
    """--init_from a released folder (or its `convert --to hf` copy) on the NxD backend (test double): the run plans
    and exports the folder's architecture (vocabularies grown by the added tokens, its tokenizers), the RR head of
    a released folder starts fresh with a note, the step-0 evaluation equals the one-process backend's on the same
    weights, and final/ keeps the released generator rows (frozen) and prompt format."""
    import subprocess
    from scaledown import ScaleDownModel
    from scaledown.checkpoint import convert
    from scaledown.training.compare_runs import read_scalars
    root = os.path.dirname(os.path.dirname(HERE))
    sys.path.insert(0, os.path.dirname(HERE))
    from test_neuron_training import free_port
    folder = released["oscar-llama"]
    if source == "converted":
        folder = str(tmp_path / "converted")
        convert("oscar", "hf", released["oscar-llama"], folder)
    flags = ["--init_from", folder, "--max_steps", "1", "--batch_size", "4", "--micro_batch_size",
             "2", "--logging_steps", "1", "--save_steps", "0", "--eval_steps", "0", "--use_bf16", "false",
             "--num_train_examples", "8", "--num_eval_examples", "4", "--eval_max_examples", "0",
             "--generator_warmup_ratio", "0", "--seed", "3"]
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               MASTER_PORT=free_port())
    runs = {}
    for name, entry in (("neuron", os.path.join(root, "tests", "nxd_double", "run.py")), ("local", "train.py")):
        runs[name] = tmp_path / name
        proc = subprocess.run([sys.executable, entry, *flags, "--output_dir", str(runs[name])], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert ("no reranking head" in proc.stderr) == (source == "released")
    nxd, local = (read_scalars(runs[n])["eval/loss"] for n in ("neuron", "local"))
    assert nxd[0] == pytest.approx(local[0], rel=1e-5)
    trained = ScaleDownModel.from_pretrained(str(runs["neuron"] / "final"))
    assert trained.config.prompt_format == "oscar"
    assert (trained.compressor.rr_head is not None) == (source == "released")
    rows = torch.load(os.path.join(released["oscar-llama"], "decoder_first_last_layers.pth"), weights_only=True)
    own = trained.generator.get_base_model().state_dict()
    for key, value in rows.items():
        assert torch.equal(own[key].float(), value.float()), key


def test_trn1_dry_run_plans_the_released_architecture(released, capsys):
    """The Trn1 dry run with --init_from a released folder checks the released model (its vocabulary grown by the
    added tokens), not the default preset's: a tensor-parallel degree that does not divide it is refused there."""
    from scaledown.cli.train import launcher_main

    def main(argv):
        return launcher_main("neuron", argv)
    assert main(["--dry_run", "--init_from", released["oscar-nlayers"], "--tensor_parallel_size", "2"]) == 2
    err = capsys.readouterr().err
    assert "vocabulary size 1939" in err and "Traceback" not in err, err
    assert main(["--dry_run", "--init_from", released["oscar-nlayers"]]) == 0
    assert "38 modules become NxD parallel layers" in capsys.readouterr().out


def test_run_from_released_folder_resumes_with_its_init_from(released, tmp_path, capsys):
    """A run started from a released folder resumes onto the released structure: without --init_from the resume
    stops with a message naming it (it used to fail deep in model building), with it the run continues."""
    from scaledown.cli.main import main
    out = tmp_path / "run"
    flags = ["--batch_size", "2", "--micro_batch_size", "2", "--num_train_examples", "4", "--num_eval_examples", "2",
             "--eval_max_examples", "0", "--generator_warmup_ratio", "0", "--output_dir", str(out)]
    assert main(["train", "--init_from", released["oscar-nlayers"], "--max_steps", "1", "--save_steps", "1",
                       *flags]) == 0
    capsys.readouterr()
    assert main(["train", "--resume_from", "auto", "--max_steps", "2", "--allow_changed_settings",
                       "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--init_from" in err and "released OSCAR" in err and "Traceback" not in err, err
    assert main(["train", "--resume_from", "auto", "--init_from", released["oscar-nlayers"], "--max_steps", "2",
                       "--allow_changed_settings", "--output_dir", str(out)]) == 0
    assert (out / "checkpoints" / "step_0000002").is_dir()


def test_init_from_a_released_folder_settles_the_warm_up_before_validation(released, tmp_path, caplog):
    """The tiny preset's generator warm-up would recopy the released compressor: it is off in the config as built
    (not patched after validation), with a note; asked for by flag it is refused by name."""
    import logging
    from scaledown.cli.args import build_parser
    from scaledown.cli.training_run import train_config
    from scaledown.errors import ConfigError
    parse = build_parser("train.py", "").parse_args
    with caplog.at_level(logging.WARNING):
        config = train_config(parse(["--init_from", released["oscar-nlayers"], "--output_dir", str(tmp_path / "r")]))
    assert config.preset == "tiny" and config.generator_warmup_ratio == 0.0
    assert "generator_warmup_ratio" not in config.preset_fields
    assert any("no generator warm-up" in r.getMessage() for r in caplog.records)
    assert config.to_dict() == type(config).from_dict(config.to_dict()).to_dict()   # a whole, valid config
    with pytest.raises(ConfigError, match="--generator_warmup_ratio 0.5 with --init_from .*Pass --generator_warmup_ratio 0"):
        train_config(parse(["--init_from", released["oscar-nlayers"], "--generator_warmup_ratio", "0.5"]))
