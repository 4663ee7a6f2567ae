# A resumed run is the same run (settings and data from the checkpoint, changes by kind); runs are never overwritten.
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import RUN, stopped_at_4
from scaledown.cli.train import main as train_main
from scaledown.data.synthetic import generate_examples


def weights(folder):
    files = [os.path.join(folder, "generator_adapter", "adapter_model.safetensors"),
             os.path.join(folder, "compressor", "model.safetensors")]
    return {f"{i}:{k}": v for i, f in enumerate(files) for k, v in load_file(f).items()}


def state(out, step):
    return json.loads((out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").read_text())


def test_resume_with_no_flags_is_the_recorded_run(finished, tmp_path, capsys):
    out = stopped_at_4(finished, tmp_path)
    assert train_main(["--resume_from", "auto", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"resumed from {out}/checkpoints/step_0000004 at step 4/6" in printed.out + printed.err
    # the same data, batch and schedule as the uninterrupted run: the same weights, bit for bit
    expected, got = weights(finished / "final"), weights(out / "final")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    recorded = state(out, 6)
    assert recorded["run_inputs"]["train_data"] == os.path.abspath(state(finished, 6)["run_inputs"]["train_data"])
    assert recorded["config"]["batch_size"] == 4 and recorded["changed_settings"] == []
    # nothing of the original run was deleted: steps 2 and 4 are kept beside the new 6 (keep-last-3)
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002", "step_0000004", "step_0000006"]


@pytest.mark.parametrize("flags,named", [
    (["--batch_size", "8"], "batch_size"),
    (["--max_steps", "20"], "max_steps"),
    (["--seed", "4"], "seed"),
    (["--learning_rate_generator", "0.0042"], "learning_rate_generator"),
    (["--train_data", "OTHER"], "train_data"),
])
def test_resume_refuses_changed_run_settings(finished, data, tmp_path, flags, named, capsys):
    out = stopped_at_4(finished, tmp_path)
    flags = [str(data[1]) if f == "OTHER" else f for f in flags]
    assert train_main(["--resume_from", "auto", "--output_dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "--allow_changed_settings" in err and "Traceback" not in err
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002", "step_0000004"]


def test_changed_data_file_content_is_refused(finished, data, tmp_path, capsys):
    out = stopped_at_4(finished, tmp_path)
    changed = tmp_path / "mine.jsonl"
    shutil.copy(data[0], changed)
    recorded = state(out, 4)
    for step in (2, 4):   # point the copy's record at a file we may change
        s = state(out, step)
        s["run_inputs"]["train_data"] = str(changed)
        (out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").write_text(json.dumps(s))
    with open(changed, "a") as f:
        f.write(json.dumps(generate_examples(1, seed=9)[0]) + "\n")
    assert recorded["data_files"]["train_data"]["bytes"] == os.path.getsize(data[0])
    assert train_main(["--resume_from", "auto", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train_data" in err and "content changed" in err


@pytest.mark.parametrize("flags,named", [
    (["--compressor_type", "modernbert"], "compressor_type"),
    (["--lora_r", "4"], "lora_r"),
    (["--num_memory_tokens", "2", "--compression_rate", "16"], "num_memory_tokens"),
    (["--preset", "none_such"], "preset"),
])
def test_resume_refuses_another_architecture_before_loading(finished, tmp_path, flags, named, capsys):
    out = stopped_at_4(finished, tmp_path)
    assert train_main(["--resume_from", "auto", "--output_dir", str(out), *flags, "--allow_changed_settings"]) == 2
    err = capsys.readouterr().err
    assert named in err and "architecture" in err and "size mismatch" not in err and "Traceback" not in err


def test_allowed_and_free_changes_are_listed_and_recorded(finished, tmp_path, capsys):
    out = stopped_at_4(finished, tmp_path)
    assert train_main(["--resume_from", "auto", "--output_dir", str(out), "--max_steps", "7", "--micro_batch_size",
                       "2", "--logging_steps", "1", "--allow_changed_settings"]) == 0
    printed = capsys.readouterr().out
    assert "max_steps 6 -> 7" in printed and "micro_batch_size" in printed
    changes = state(out, 7)["changed_settings"]
    assert changes == [{"step": 4, "setting": "max_steps", "was": 6, "now": 7}]
    assert state(out, 7)["config"]["micro_batch_size"] == 2   # free: taken without asking


def test_checkpoint_without_recorded_settings_resumes_with_the_flags_and_a_note(finished, data, tmp_path, capsys):
    out = stopped_at_4(finished, tmp_path)
    for step in (2, 4):
        s = state(out, step)
        for key in ("settings_recorded", "run_inputs", "data_files", "changed_settings"):
            s.pop(key)
        (out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").write_text(json.dumps(s))
    assert train_main([*RUN, "--train_data", str(data[0]), "--resume_from", "auto", "--output_dir", str(out)]) == 0
    assert "written before checkpoints recorded their run's settings" in capsys.readouterr().out
    expected, got = weights(finished / "final"), weights(out / "final")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_resuming_an_older_checkpoint_of_the_same_run_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    older = out / "checkpoints" / "step_0000002"
    assert train_main(["--resume_from", str(older), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "step_0000004" in err and "replace" in err
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002", "step_0000004", "step_0000006"]


# ---- a new run never replaces another silently ----------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["final", "checkpoint", "summary"])
def test_new_run_in_a_folder_holding_a_run_is_refused(finished, data, tmp_path, keep, capsys):
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    if keep != "final":
        shutil.rmtree(out / "final")
    if keep != "checkpoint":
        shutil.rmtree(out / "checkpoints")
    if keep != "summary":
        (out / "train_summary.json").unlink()
    before = sorted(os.listdir(out))
    assert train_main([*RUN, "--seed", "4", "--train_data", str(data[0]), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite_output_dir" in err and "--resume_from auto" in err
    assert sorted(os.listdir(out)) == before


def test_overwrite_output_dir_starts_over(finished, data, tmp_path):
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    assert train_main([*RUN, "--max_steps", "2", "--seed", "4", "--train_data", str(data[0]), "--output_dir",
                       str(out), "--overwrite_output_dir"]) == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002"]
    assert state(out, 2)["config"]["seed"] == 4


@pytest.mark.parametrize("flags,message", [
    (["--resume_from", ""], "--resume_from is empty"),
    (["--resume_from", "auto", "--overwrite_output_dir"], "pass one of them"),
    (["--allow_changed_settings"], "only applies with --resume_from"),
])
def test_contradictory_or_empty_resume_flags(tmp_path, flags, message, capsys):
    assert train_main(["--output_dir", str(tmp_path / "o"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_base_model_recorded_by_a_relative_path_is_the_same_folder(tmp_path, monkeypatch):
    """Runs written before configs recorded absolute paths hold e.g. generator_model_name 'my/models/phi3'; a resume
    from that working directory (the config now makes it absolute) keeps the model instead of refusing it."""
    from scaledown.training.resume import _differences
    (tmp_path / "my" / "gen").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    recorded = {"generator_model_name": "my/gen", "lora_r": 8}
    assert _differences(recorded, {"generator_model_name": str(tmp_path / "my" / "gen"), "lora_r": 8},
                        "architecture") == []
    assert _differences(recorded, {"generator_model_name": str(tmp_path / "other"), "lora_r": 8}, "architecture") == [
        {"setting": "generator_model_name", "was": "my/gen", "now": str(tmp_path / "other")}]


def test_a_run_resumed_after_its_warm_up_saves_the_warmed_up_generator(data, tmp_path):
    """The warm-up trains the base generator, so final/ holds generator_base/: also when the process that writes it
    resumed after the warm-up (it never entered the warm-up phase itself; before, its final/ silently dropped
    generator_base/ and loaded the untrained base)."""
    from transformers import AutoModelForCausalLM
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    folder = str(tmp_path / "generator")   # a folder base (the tiny preset's random base is always saved)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_models.tiny_model_config("scaledown-tiny-mistral")).save_pretrained(folder)
    load_tiny_tokenizer().save_pretrained(folder)
    run = [*RUN, "--generator_model_name", folder, "--generator_warmup_ratio", "0.5", "--train_data", str(data[0])]
    whole = tmp_path / "whole"
    assert train_main([*run, "--output_dir", str(whole)]) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    for gone in ("checkpoints/step_0000006", "final", "train_summary.json"):
        shutil.rmtree(resumed / gone) if (resumed / gone).is_dir() else (resumed / gone).unlink()
    (resumed / "checkpoints" / "latest").write_text("step_0000004")   # after the 3 warm-up steps
    assert train_main(["--resume_from", "auto", "--output_dir", str(resumed)]) == 0
    base = os.path.join("generator_base", "model.safetensors")
    assert os.path.isfile(whole / "final" / base) and os.path.isfile(resumed / "final" / base)
    expected, got = load_file(whole / "final" / base), load_file(resumed / "final" / base)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
