# Damaged or missing checkpoint files stop a resume with one paragraph naming the file and the previous checkpoint;
# a save that fails (a full disk, for real) says so and leaves no visible incomplete checkpoint.
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, RUN
from scaledown.cli.train import main as train_main


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def garble(path):
    with open(path, "wb") as f:
        f.write(b"\x00garbage{" * 20)


@pytest.mark.parametrize("name,damage", [
    ("model.safetensors", truncate), ("model.safetensors", garble), ("trainer_state.json", garble),
    ("optimizer.pt", garble), ("optimizer.pt", truncate), ("client_state.pt", truncate), ("client_state.pt", os.remove),
    ("model.safetensors", os.remove),
])
def test_damaged_newest_checkpoint_names_the_file_and_the_previous_one(finished, tmp_path, name, damage, capsys):
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    newest = out / "checkpoints" / "step_0000006"
    damage(str(newest / name))
    assert train_main(["--resume_from", "auto", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(newest / name) in err
    previous = out / "checkpoints" / "step_0000004"
    assert f"The previous complete checkpoint is {previous}" in err and f"mv {newest}" in err
    # nothing was deleted; following the advice resumes from step 4
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002", "step_0000004", "step_0000006"]
    if (name, damage) != ("model.safetensors", truncate):
        return
    shutil.move(str(newest), str(newest) + ".damaged")
    shutil.rmtree(out / "final")
    (out / "train_summary.json").unlink()
    assert train_main(["--resume_from", "auto", "--output_dir", str(out)]) == 0
    assert f"resumed from {previous} at step 4/6" in capsys.readouterr().out


@pytest.fixture
def small_disk(tmp_path):
    """OUTPUT_DIR/checkpoints on a real 20 MiB tmpfs: one tiny checkpoint (12.5 MB) fits, the second does not."""
    folder = tmp_path / "D" / "checkpoints"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:100]})")
    yield tmp_path / "D"
    subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_during_save_says_so_and_keeps_the_complete_checkpoint(small_disk, data, capsys):
    out = small_disk
    assert train_main([*RUN, "--train_data", str(data[0]), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err
    assert f"The newest complete checkpoint is {out / 'checkpoints' / 'step_0000002'}" in err
    # the failed step 4 left nothing behind (no folder, no temporary folder); step 2 resumes
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002"]


def test_ctrl_c_saves_and_prints_the_exact_resume_command(data, tmp_path, subprocess_env):
    out = tmp_path / "D"
    args = [*RUN, "--max_steps", "40", "--save_steps", "0", "--logging_steps", "1", "--train_data", str(data[0]),
            "--output_dir", str(out)]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=subprocess_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:   # the first logged step: training is under way
        lines.append(line)
        if line.startswith("step 1 "):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text[-2000:]
    command = next(l for l in text.splitlines() if l.startswith("SIGINT: saved a checkpoint at step"))
    step = int(command.split("at step ")[1].split(";")[0])
    assert 1 <= step < 40 and os.path.isfile(out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json")
    resume = command.split("resume with: ")[1].split()
    assert resume[1:] == ["train.py", "--resume_from", "auto", "--output_dir", str(out)]
    # the interpreter that ran it, as typed: `python` only where that is it (the README's install activates no venv)
    assert resume[0] == "python" or os.path.samefile(os.path.join(ROOT, resume[0]), sys.executable), resume[0]
    done = subprocess.run(resume, cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"at step {step}/40" in done.stdout
