# One run path: every train entry point resolves through the backend registry; auto's precedence; early refusals.
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from scaledown.cli import backends as registry
from scaledown.cli.train import ALL_BACKENDS, TRAIN_PY_BACKENDS, resolve_run
from scaledown.errors import ConfigError
from scaledown.training.backends.neuron.profile_file import NeuronProfile

PROFILE = "neuron_configs/tp8_pp1.json"
TRN1 = "launchers/train_trn1.py"


def cli(args, env, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def no_launcher(subprocess_env, **extra):
    env = {k: v for k, v in subprocess_env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                                  "MASTER_PORT") and not k.startswith("SLURM_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def nxd_checkpoint(tmp_path_factory):
    """A real NxD checkpoint (`scaledown convert --from hf --to nxd` of a tiny saved model)."""
    from scaledown.checkpoint import convert
    from tests.convert_helpers import make_hf_folder
    root = tmp_path_factory.mktemp("nxd")
    make_hf_folder(root / "final")
    return convert("hf", "nxd", str(root / "final"), str(root / "nxd"), tp=2, pp=1).path


@pytest.mark.parametrize("init", [False, True])
def test_train_py_trainium_and_the_trn1_launcher_resolve_the_same_run(tmp_path, monkeypatch, nxd_checkpoint, init):
    """The seed's `train.py --device trainium --neuron_config X` is the Trn1 launcher's run: same settings, profile,
    compiler/runtime environment and (with --init_from NxD weights) the same meta-device build."""
    monkeypatch.chdir(ROOT)
    common = ["--neuron_config", PROFILE, "--output_dir", str(tmp_path / "run"), "--max_steps", "3"]
    common += ["--init_from", str(nxd_checkpoint)] if init else []
    seed_way, _ = resolve_run(["--device", "trainium", *common], "train.py", TRAIN_PY_BACKENDS, env={},
                              check_launch=False)
    launcher, _ = resolve_run(common, TRN1, ("neuron",), env={}, check_launch=False)
    every, _ = resolve_run(["--backend", "neuron", *common], "scaledown train", ALL_BACKENDS, env={},
                           check_launch=False)
    assert seed_way.backend == launcher.backend == "neuron"
    assert seed_way.config == launcher.config == every.config
    assert seed_way.profile == launcher.profile == NeuronProfile.from_file(PROFILE)
    assert seed_way.environment == launcher.environment == NeuronProfile.from_file(PROFILE).environment()
    assert "NEURON_CC_FLAGS" in seed_way.environment and "FI_PROVIDER" in seed_way.environment
    assert (seed_way.weights_from, seed_way.init_from) == (launcher.weights_from, launcher.init_from)
    assert seed_way.weights_from == (str(nxd_checkpoint) if init else None) and seed_way.init_from is None
    assert seed_way == launcher == every
    # the resume command starts the same backend again
    assert seed_way.launcher_flags == ("--device", "trainium", "--neuron_config", PROFILE)
    assert launcher.launcher_flags == ("--neuron_config", PROFILE)


def test_the_neuron_backend_gets_the_resolved_layout_and_environment(tmp_path, subprocess_env):
    """train.py --device trainium builds NeuronBackend with X's profile and exports X's environment (NxD double)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    script = ("import json, os, sys; sys.path.insert(0, 'tests'); from nxd_double import install; install()\n"
              "from scaledown.cli.backends import REGISTRY; from scaledown.cli.train import resolve_run\n"
              f"run, _ = resolve_run(['--device', 'trainium', '--neuron_config', '{PROFILE}', '--tp', '1', '--output_dir', "
              f"'{tmp_path / 'run'}'])\n"
              "backend = REGISTRY[run.backend].build(run.config, run)\n"
              "print(json.dumps({'profile': backend.profile.path, 'same': backend.profile == run.profile, "
              "'env': {k: os.environ.get(k) for k in run.environment}}))\n")
    env = no_launcher(subprocess_env, MASTER_PORT=port)
    for key in NeuronProfile.from_file(os.path.join(ROOT, PROFILE)).environment():
        env.pop(key, None)
    proc = cli(["-c", script], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["profile"] == PROFILE and seen["same"]
    assert seen["env"] == NeuronProfile.from_file(os.path.join(ROOT, PROFILE)).environment()


def test_auto_precedence():
    class Args:
        backend, deepspeed, neuron_config = "auto", None, None

    def pick(allowed=ALL_BACKENDS, env=None, explicit=None, **flags):
        args = Args()
        for key, value in flags.items():
            setattr(args, key, value)
        return registry.choose_backend(args, explicit or {}, allowed, env or {})[0]

    torchrun = {"RANK": "0", "WORLD_SIZE": "2"}
    assert pick() == "local"
    assert pick(env=torchrun) == "deepspeed"
    assert pick(env={"OMPI_COMM_WORLD_SIZE": "4"}) == "deepspeed"
    assert pick(env={"WORLD_SIZE": "1"}) == "local"
    assert pick(deepspeed="ds_configs/zero2.json") == "deepspeed"
    assert pick(explicit={"device_type": "trainium"}, env=torchrun) == "neuron"      # the device beats the launcher
    assert pick(neuron_config=PROFILE, env=torchrun) == "neuron"
    assert pick(deepspeed="x.json", explicit={"device_type": "trainium"}) == "deepspeed"   # --deepspeed beats the device
    assert pick(backend="local", env=torchrun, deepspeed="x.json") == "local"       # --backend beats everything
    # train.py runs local or neuron: under a launcher it stays local (and is refused, below); launchers fix one
    assert pick(TRAIN_PY_BACKENDS, env=torchrun) == "local"
    assert pick(TRAIN_PY_BACKENDS, explicit={"device_type": "trainium"}) == "neuron"
    assert pick(("deepspeed",)) == "deepspeed" and pick(("neuron",), env=torchrun) == "neuron"
    assert pick(explicit={"device_type": "neuron"}, env=torchrun) == "torch"   # TorchNeuron: the PyTorch-native backend
    with pytest.raises(ConfigError, match="scaledown train --backend neuron"):
        pick(("deepspeed",), backend="neuron")


@pytest.mark.parametrize("argv,extra_env,message", [
    (["-m", "scaledown.cli.main", "train", "--backend", "local"], {"RANK": "1", "WORLD_SIZE": "2"},
     "--backend local trains in one process, but this process is one of 2 ranks (WORLD_SIZE=2"),
    (["-m", "scaledown.cli.main", "train", "--backend", "neuron"], {}, "--backend neuron needs the Neuron 2.28 stack"),
    (["train.py", "--device", "trainium"], {}, "--device trainium needs the Neuron 2.28 stack"),
    (["-m", "scaledown.cli.main", "train", "--backend", "local", "--deepspeed", "ds_configs/zero2.json"], {},
     "--deepspeed is a flag of the deepspeed backend, but this run trains on the local backend (--backend local)"),
    (["train.py", "--dry_run"], {}, "--dry_run is a flag of the neuron backend"),
    (["-m", "scaledown.cli.main", "train", "--backend", "neuron", "--device", "gpu", "--dry_run"], {},
     "--backend neuron trains with device_type trainium, but --device gpu was given"),
    (["launchers/train_gpu.py", "--backend", "neuron"], {}, "this command runs only the deepspeed backend"),
    ([TRN1, "--dry_run", "--neuron_config", "neuron_configs/tp8_pp4.json"], {},   # the tiny preset warms up
     "generator_warmup_ratio > 0 with --pipeline_parallel_size > 1"),
    ([TRN1, "--dry_run", "--tp", "8", "--sequence_parallel", "true"], {}, "--sequence_parallel is not supported by the NxD backend"),
    # TorchNeuron (Trn2/Trn3) is a torch device: not installed here, named before anything loads
    (["-m", "scaledown.cli.main", "train", "--device", "neuron"], {}, "--device neuron needs TorchNeuron"),
    (["train.py", "--device", "neuron"], {}, "--device neuron (TorchNeuron, Trn2/Trn3) runs on the PyTorch-native"),
])
def test_refusals_name_the_flag_before_anything_is_built(argv, extra_env, message, tmp_path, subprocess_env):
    out = tmp_path / "run"
    proc = cli([*argv, "--max_steps", "2", "--output_dir", str(out)], no_launcher(subprocess_env, **extra_env))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1   # one paragraph
    assert not out.exists()


def test_scaledown_train_help_states_the_precedence(subprocess_env):
    proc = cli(["-m", "scaledown.cli.main", "train", "--help"], subprocess_env)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--backend {auto,local,deepspeed,neuron,torch}" in text and "first match wins" in text and "torch (PyTorch-native FSDP2" in text
    assert "--deepspeed PATH" in text and "--neuron_config PATH" in text and "--dry_run" in text


def test_a_backend_defined_outside_scaledown_trains_through_scaledown_train(tmp_path, subprocess_env):
    """`--backend package.module:Class` imports a Backend subclass from the Python path (tests/toy_backend.py),
    with no edit to scaledown/; a module or class that cannot be used is refused before anything is built."""
    env = no_launcher(subprocess_env)
    flags = ["--preset", "tiny", "--max_steps", "2", "--batch_size", "4", "--eval_max_examples", "0",
             "--gradient_checkpointing", "false", "--generator_warmup_ratio", "0", "--num_train_examples", "8",
             "--num_eval_examples", "2"]
    run = cli(["-m", "scaledown.cli.main", "train", "--backend", "tests.toy_backend:ToyBackend", *flags,
               "--output_dir", str(tmp_path / "toy")], env, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "backend toy" in run.stdout
    assert json.loads((tmp_path / "toy" / "toy_backend.json").read_text()) == {"setup": 1, "optimizer_step": 2}
    state = json.loads((tmp_path / "toy" / "checkpoints" / "step_0000002" / "trainer_state.json").read_text())
    assert state["backend"] == "toy" and state["step"] == 2
    refused = cli(["-m", "scaledown.cli.main", "train", "--backend", "tests.toy_backend:NotABackend", *flags,
                   "--output_dir", str(tmp_path / "x")], env)
    assert refused.returncode == 2 and "has no class NotABackend deriving from" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x").exists()
    for name, problem in (("tests.no_such_module:Toy", "module tests.no_such_module cannot be imported"),
                          ("tests.toy_backend:Missing", "has no class Missing deriving from")):
        with pytest.raises(ConfigError, match=problem):
            resolve_run(["--backend", name, *flags], "scaledown train", ALL_BACKENDS, env={})
    # train.py runs its own backends only; --help says what naming a module does
    with pytest.raises(ConfigError, match="scaledown train` only"):
        resolve_run(["--backend", "tests.toy_backend:ToyBackend", *flags], "train.py", TRAIN_PY_BACKENDS, env={})
    helptext = cli(["-m", "scaledown.cli.main", "train", "--help"], env).stdout
    assert "package.module:Class" in helptext and "name only code you trust" in " ".join(helptext.split())


def test_default_config_files_are_the_shipped_ones():
    # a module moved one folder deeper once pointed the ZeRO-3 default at scaledown/ds_configs/ (no such file)
    from scaledown.training.backends.deepspeed.launch import DEFAULT_DS_CONFIG
    assert os.path.samefile(DEFAULT_DS_CONFIG, os.path.join(ROOT, "ds_configs", "zero3.json"))


def test_the_top_level_help_names_every_backend_and_checkpoint_format(capsys):
    # the one-line summaries are written by hand (cheap --help, no torch): checked against the registries
    from scaledown.checkpoint.formats import FORMATS
    from scaledown.cli.main import SUBCOMMANDS
    assert f"{{{','.join(('auto', *ALL_BACKENDS))}}}" in SUBCOMMANDS["train"][2]
    for name in FORMATS:
        assert name in SUBCOMMANDS["convert"][2], name
