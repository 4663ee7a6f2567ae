# Compressor pretraining: chunked text rows, task collation, ratio, loss falls, resume, reuse, the from-scratch warning.
import json
import os
import shutil
import warnings

import pytest
import torch

from conftest import tiny_config
from scaledown import ScaleDownModel
from scaledown.data.pretraining import PretrainingDataset, assign_tasks, chunk_table, load_pretraining_data
from scaledown.data.corpus import CorpusDocument
from scaledown.errors import ConfigError, DataError
from scaledown.models.inputs import PRETRAINING_TASKS
from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
from scaledown.training import ScaleDownTrainer

TEXTS = ["Dravok was born in Pelmar. Dravok works as a potter. Dravok likes the color red. Dravok keeps a cat as "
         "a pet. Dravok eats figs every day. Dravok plays the harp.", "Lulax was born in Tir. Lulax plays the drum."]


def pretrain_config(tmp_path, **overrides):
    values = dict(stage="pretrain", compressor_type="modernbert", output_dir=str(tmp_path / "pre"))
    return tiny_config(**{**values, **overrides})


def text_rows(ratio=0.5, seed=0):
    documents = [CorpusDocument(f"t{i}", str(i), "", t) for i, t in enumerate(TEXTS)]
    return PretrainingDataset(chunk_table(documents, load_tiny_tokenizer(), 32), ratio, seed)


def test_rows_are_chunks_with_their_continuation():
    rows = text_rows(ratio=0.0)
    chunks = [rows.documents[i].as_py() for i in range(len(rows))]
    assert len(chunks) == 3 and " ".join(chunks[:2]) == TEXTS[0] and chunks[2] == TEXTS[1]
    # ratio 0: every chunk that has a next chunk in its document continues it; the last one can only auto-encode
    assert [rows[i]["task"] for i in range(3)] == ["continuation", "autoencode", "autoencode"]
    assert rows[0] == {"documents": [chunks[0]], "task": "continuation", "answer": chunks[1]}
    assert rows[1] == {"documents": [chunks[1]], "task": "autoencode", "answer": chunks[1]}


def test_collation_targets_prompts_and_query_independent_compression(model):
    rows = text_rows(ratio=0.0)
    inputs = model.inputs
    batch = inputs.collate_pretraining([rows[0], rows[1]])
    tok = model.tokenizer
    for b, row in enumerate((rows[0], rows[1])):
        labels = batch["labels"][b][batch["labels"][b] >= 0].tolist()
        assert labels == tok(" " + row["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompt = tok.decode(batch["input_ids"][b][batch["labels"][b] < 0])
        assert PRETRAINING_TASKS[row["task"]] in prompt and "Question" not in prompt
        assert int((batch["memory_slots"][b] >= 0).sum()) == model.config.num_memory_tokens
        # the compressor reads the chunk alone (no query), exactly as compressor_ids(None, chunk)
        ids = batch["compressor_input_ids"][b, 0][batch["compressor_attention_mask"][b, 0] == 1].tolist()
        assert ids == inputs.compressor_ids(None, row["documents"][0])
    # the answer-side limit of question answering does not cut pretraining targets
    assert len(labels) > model.config.answer_max_length
    with pytest.raises(ValueError, match="task"):
        inputs.collate_pretraining([{"documents": ["x"], "answer": "x"}])


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_task_ratio_is_exact_and_seeded(ratio):
    import numpy as np
    has_next = np.array([i % 4 != 3 for i in range(400)])  # 4-chunk documents: 300 chunks can be continued
    autoencode = assign_tasks(has_next, ratio, seed=3)
    # exact where the text allows it; at ratio 0 only the 300 continuable chunks can be continuations
    assert int(autoencode.sum()) == max(round(ratio * 400), 100)
    assert autoencode[~has_next].all()  # a document's last chunk has nothing to continue
    assert (assign_tasks(has_next, ratio, seed=3) == autoencode).all()
    if ratio == 0.5:  # which chunks continue depends on the seed when there is a choice
        assert (assign_tasks(has_next, ratio, seed=4) != autoencode).any()


def test_ratio_that_the_text_cannot_give_warns(caplog):
    import numpy as np
    with caplog.at_level("WARNING"):
        autoencode = assign_tasks(np.array([True, False] * 10), 0.0, seed=0)
    assert int((~autoencode).sum()) == 10 and "continuations instead of 100%" in caplog.text


def test_corpus_file_and_dataset_sources(tmp_path, config):
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:  # KILT-style lines: 60 documents, the 50th is held out
        for i in range(60):
            f.write(json.dumps({"_id": f"d{i}", "wikipedia_title": f"Doc{i}", "text": [f"Doc{i}", TEXTS[0]]}) + "\n")
    config = tiny_config(stage="pretrain", output_dir=str(tmp_path / "run"))
    tok = load_tiny_tokenizer()
    train, held = load_pretraining_data(config, tok, "tiny", source=str(corpus))
    assert os.path.isfile(tmp_path / "run" / "pretraining_passages" / "train" / "passages.json")
    assert len(held) >= 2 and {r["task"] for r in held} == {"autoencode"}
    assert held[0]["documents"][0].startswith("Doc49: ") and len(train) == 59 * len(held)
    assert train.autoencoding_share == pytest.approx(0.5, abs=0.01)
    import datasets
    dataset = datasets.Dataset.from_dict({"text": TEXTS})
    train, held = load_pretraining_data(config, tok, "tiny", source=dataset, eval_source=[TEXTS[1]])
    assert len(train) == 3 and len(held) == 1 and held[0]["answer"] == TEXTS[1]
    with pytest.raises(DataError, match="bad.jsonl line 1: no text field"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"title": "no text"}) + "\n")
        load_pretraining_data(config, tok, "tiny", source=str(bad))


def test_short_pretraining_lowers_reconstruction_loss(tmp_path):
    # a random generator ignores its context: with the LoRA trained too (COCOM), 12 steps move the loss clearly
    config = pretrain_config(tmp_path, max_steps=12, batch_size=16, micro_batch_size=16, pretrain_generator="lora",
                             learning_rate_compressor_modernbert=3e-3, eval_max_examples=0)
    model = ScaleDownModel(config)
    train, held = load_pretraining_data(config, model.inputs.compressor_tokenizer, "tiny")
    result = ScaleDownTrainer(model, config, train, list(held)[:32], progress=False, export_final=False).train()
    before, after = result.eval_before, result.eval_after
    assert set(after) == {"eval/loss", "eval/reconstruction_accuracy"}
    assert after["eval/loss"] < before["eval/loss"] - 0.5, (before, after)
    assert after["eval/reconstruction_accuracy"] > before["eval/reconstruction_accuracy"]
    trained = {n for n, p in model.generator.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    # frozen generator (the default): pretraining trains the compressor only
    frozen = ScaleDownModel(pretrain_config(tmp_path))
    frozen.set_trainable("pretrain")
    assert not any(p.requires_grad for p in frozen.generator.parameters())
    assert [g["name"] for g in frozen.parameter_groups()] == ["compressor"]


def test_pretrain_resume_equals_uninterrupted_run_and_logs_the_tags(tmp_path):
    common = dict(max_steps=6, generator_warmup_ratio=1 / 3, save_steps=3, logging_steps=1, eval_steps=1,
                  pretrain_generator="lora")
    runs = {}
    for name in ("a", "b"):
        config = pretrain_config(tmp_path, output_dir=str(tmp_path / name), **common)
        model = ScaleDownModel(config)
        train, held = load_pretraining_data(config, model.inputs.compressor_tokenizer, "tiny", num_rows=64)
        if name == "b":  # a run killed after its step-3 checkpoint (inside the pretraining phase)
            os.makedirs(tmp_path / "b" / "checkpoints")
            shutil.copytree(tmp_path / "a" / "checkpoints" / "step_0000003",
                            tmp_path / "b" / "checkpoints" / "step_0000003")
        trainer = ScaleDownTrainer(model, config, train, list(held)[:8], progress=False,
                                   resume_from="auto" if name == "b" else None)
        runs[name] = trainer.train()
    state = json.loads((tmp_path / "a" / "checkpoints" / "step_0000003" / "trainer_state.json").read_text())
    assert state["phase"] == "pretrain" and state["config"]["stage"] == "pretrain"
    assert runs["b"].losses == pytest.approx(runs["a"].losses[3:], abs=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "a" / "runs"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/ce_loss", "train/lr_compressor", "train/lr_generator", "perf/tokens_per_sec",
                "eval/loss", "eval/reconstruction_accuracy", "eval_uncompressed/reconstruction_accuracy"):
        assert tag in scalars, tag


def _other_generator(tmp_path, **changes):
    """A local random Mistral folder (not the tiny sentinel): another generator for compressor reuse."""
    from transformers import MistralConfig, MistralForCausalLM
    from scaledown.models.tiny_models import tiny_generator_config_dict
    path = tmp_path / "other_generator"
    torch.manual_seed(5)
    MistralForCausalLM(MistralConfig(**{**tiny_generator_config_dict(), **changes})).save_pretrained(str(path))
    load_tiny_tokenizer().save_pretrained(str(path))
    return str(path)


def test_compressor_reuse_with_another_generator(tmp_path):
    pre = ScaleDownModel(pretrain_config(tmp_path))
    with torch.no_grad():
        pre.compressor.memory_embeddings.add_(1.0)  # stands in for pretrained weights
    pre.save_pretrained(str(tmp_path / "pre" / "final"))
    other = _other_generator(tmp_path, num_hidden_layers=2)
    # the reused compressor's architecture comes with it; the rest is this run's (a fresh LoRA on another generator)
    from scaledown.models.compressor_reuse import read_saved_compressor
    arch = read_saved_compressor(str(tmp_path / "pre")).architecture()
    config = tiny_config(**arch, generator_model_name=other)
    model = ScaleDownModel.with_pretrained_compressor(str(tmp_path / "pre"), config)
    assert model.compressor_pretrained and len(model.generator.get_base_model().model.layers) == 2
    for (name, a), b in zip(pre.compressor.state_dict().items(), model.compressor.state_dict().values()):
        assert torch.equal(a, b), name
    # the compressor's output width must match the new generator's
    width = model.generator.get_base_model().config.hidden_size
    wide = _other_generator(tmp_path, hidden_size=2 * width, head_dim=2 * width // 8)
    with pytest.raises(ConfigError, match=f"{width}-wide embedding space .* is {2 * width} wide"):
        ScaleDownModel.with_pretrained_compressor(str(tmp_path / "pre"), config.__class__.from_dict(
            {**config.to_dict(), "generator_model_name": wide}))
    with pytest.raises(ConfigError, match="Pass --compressor_type modernbert"):
        ScaleDownModel.with_pretrained_compressor(str(tmp_path / "pre"), tiny_config(compressor_type="causal_lm"))


def test_fine_tuning_a_separate_compressor_from_scratch_warns_once(tmp_path, rows):
    from scaledown.data import ScaleDownDataset
    config = tiny_config(compressor_type="causal_lm", output_dir=str(tmp_path / "ft"), max_steps=1)
    data = ScaleDownDataset(rows, config)
    with pytest.warns(UserWarning, match="python train.py --stage pretrain --compressor_type causal_lm") as seen:
        ScaleDownTrainer(ScaleDownModel(config), config, data, progress=False, export_final=False).train()
    assert len([w for w in seen if "from scratch" in str(w.message)]) == 1
    saved = tmp_path / "m"
    ScaleDownModel(config).save_pretrained(str(saved))
    for i, model in enumerate((ScaleDownModel.from_pretrained(str(saved)), ScaleDownModel(tiny_config()))):
        with warnings.catch_warnings(record=True) as seen:   # loaded; n_layers (one run folder each)
            warnings.simplefilter("always")
            ScaleDownTrainer(model, model.config.__class__.from_dict({**model.config.to_dict(), "max_steps": 1,
                                                                      "output_dir": str(tmp_path / f"x{i}")}),
                             data, progress=False, export_final=False).train()
        assert not [w for w in seen if "from scratch" in str(w.message)]


@pytest.mark.slow
def test_command_lines_pretrain_then_fine_tune(tmp_path, subprocess_env):
    import subprocess
    import sys
    from conftest import ROOT

    def cli(*args):
        return subprocess.run([sys.executable, *args], env=subprocess_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=600)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": TEXTS[i % 2]}) + "\n" for i in range(120)))
    pre = tmp_path / "pre"
    short = ["--max_steps", "2", "--batch_size", "4", "--logging_steps", "1"]
    proc = cli("-m", "scaledown.cli.main", "train", "--stage", "pretrain", "--preset", "tiny", "--compressor_type",
               "causal_lm", "--pretrain_data", str(corpus), "--pretrain_autoencoding_ratio", "0.25", *short,
               "--output_dir", str(pre))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out reconstruction accuracy" in proc.stdout
    summary = json.loads((pre / "train_summary.json").read_text())
    assert "eval/reconstruction_accuracy" in summary["eval_after"]
    qa = ["--num_eval_examples", "4", "--eval_max_examples", "2", *short]
    # fine-tuning from the pretrained model: no warning; a causal_lm compressor from scratch: one warning
    proc = cli("train.py", "--init_from", str(pre / "final"), *qa, "--output_dir", str(tmp_path / "ft"))
    assert proc.returncode == 0 and "from scratch" not in proc.stderr, proc.stderr[-3000:]
    proc = cli("train.py", "--compressor_type", "causal_lm", *qa, "--output_dir", str(tmp_path / "scratch"))
    assert proc.returncode == 0 and proc.stderr.count("from scratch") == 1, proc.stderr[-3000:]
    assert "train.py --stage pretrain --compressor_type causal_lm" in proc.stderr
    proc = cli("train.py", "--stage", "pretrain", "--train_data", str(corpus), "--output_dir", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--pretrain_data" in proc.stderr and "Traceback" not in proc.stderr
