# Generators with tied input/output embeddings (tie_word_embeddings=True): train, checkpoint, export, convert, reload tied.
import os

import pytest
import torch
from safetensors.torch import load_file

from loss_split import make_tied_generator
from scaledown import ScaleDownModel
from scaledown.cli.train import train_main
from scaledown.errors import ConfigError
from scaledown.models.generator import base_causal_lm
from scaledown.training.compare_runs import read_scalars

FLAGS = ["--max_steps", "2", "--generator_warmup_ratio", "0.5", "--batch_size", "4", "--logging_steps", "1",
         "--save_steps", "1", "--eval_steps", "0", "--num_train_examples", "16", "--num_eval_examples", "4",
         "--eval_max_examples", "0", "--use_bf16", "false", "--seed", "3"]


def assert_tied(model: ScaleDownModel) -> torch.Tensor:
    lm = base_causal_lm(model.generator)
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    return lm.get_input_embeddings().weight.detach()


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory):
    """A generator warm-up (step 1: base weights trained, embedding = head included) then fine-tuning, to final/."""
    root = tmp_path_factory.mktemp("tied")
    generator = make_tied_generator(str(root / "generator"))
    out = root / "run"
    flags = ["--preset", "tiny", "--generator_model_name", generator, *FLAGS]
    assert train_main([*flags, "--output_dir", str(out)]) == 0
    return {"root": root, "generator": generator, "out": out, "flags": flags}


def test_warmup_run_saves_checkpoints_and_final_that_reload_tied(tied_run):
    out, generator = tied_run["out"], tied_run["generator"]
    model = ScaleDownModel.from_pretrained(str(out / "final"))
    embedding = assert_tied(model)
    base_file = load_file(str(out / "final" / "generator_base" / "model.safetensors"))
    assert "lm_head.weight" not in base_file     # written once, under the embedding's name (as transformers does)
    torch.testing.assert_close(base_file["model.embed_tokens.weight"], embedding, rtol=0, atol=0)
    untrained = load_file(os.path.join(generator, "model.safetensors"))["model.embed_tokens.weight"]
    assert not torch.equal(untrained, embedding)   # the warm-up trained it: the saved weight is the trained one
    checkpoint = load_file(str(out / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert not any(k.endswith("lm_head.weight") for k in checkpoint)
    torch.testing.assert_close(checkpoint["generator.base_model.model.model.embed_tokens.weight"], embedding,
                               rtol=0, atol=0)
    # the model reloaded keeps its head tied when it trains on, and save_pretrained(include_base=True) works
    model.save_pretrained(str(tied_run["root"] / "again"), include_base=True)
    assert_tied(ScaleDownModel.from_pretrained(str(tied_run["root"] / "again")))


def test_resume_from_a_warmup_checkpoint_equals_the_uninterrupted_run(tied_run):
    resumed = tied_run["root"] / "resumed"
    step1 = str(tied_run["out"] / "checkpoints" / "step_0000001")
    assert train_main([*tied_run["flags"], "--output_dir", str(resumed), "--resume_from", step1]) == 0
    first, again = read_scalars(str(tied_run["out"]))["train/loss"], read_scalars(str(resumed))["train/loss"]
    assert again[2] == pytest.approx(first[2], rel=1e-6)
    a = load_file(str(tied_run["out"] / "final" / "generator_base" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "generator_base" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("hops", [["deepspeed"], ["nxd"], ["nxd", "deepspeed"]],
                         ids=["hf-deepspeed-hf", "hf-nxd_tp2-hf", "hf-nxd_tp2-deepspeed-hf"])
def test_convert_round_trips_keep_the_tie(tied_run, tmp_path, hops):
    """Through every format (NxD at tp 2: the tied head is vocabulary-sharded like the embedding) and back."""
    from scaledown.checkpoint.conversion import convert
    source = current = str(tied_run["out"] / "final")
    fmt = "hf"
    for i, target in enumerate(hops + ["hf"]):
        result = convert(fmt, target, current, str(tmp_path / f"hop{i}"), tp=2 if target == "nxd" else 1)
        current, fmt = result.path, target
    reference, back = ScaleDownModel.from_pretrained(source), ScaleDownModel.from_pretrained(current)
    assert torch.equal(assert_tied(reference), assert_tied(back))
    theirs = reference.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_pipeline_parallelism_refuses_a_tied_head_before_building(tied_run, tmp_path):
    """Decision (README): embedding and head sit on the first and last stage; they are not synced, PP refuses."""
    from scaledown.checkpoint.conversion import convert
    with pytest.raises(ConfigError, match="ties lm_head to its input embeddings"):
        convert("hf", "nxd", str(tied_run["out"] / "final"), str(tmp_path / "pp"), pp=2)
    assert not (tmp_path / "pp").exists()
