# The neuron backend's launch side: its flags, settings (profile, environment, meta-device init), checks and dry run.
from __future__ import annotations

import json
import os
import shlex
from typing import Sequence

from scaledown.training.backends.neuron.profile_file import NeuronProfile, default_profile

LAUNCHER = "launchers/train_trn1.py"
DESCRIPTION = ("Train ScaleDown on Trn1 with NeuronX Distributed (tensor + pipeline parallel, ZeRO-1). Start one "
               "process per NeuronCore with torchrun (`sbatch slurm/train_trn1.sh` does it on a SLURM cluster). "
               "--neuron_config picks a profile from neuron_configs/; --dry_run checks the configuration and prints "
               "the profile, the batch arithmetic and the commands without Neuron installed.")
DRY_RUN_ONLY = ("--dry_run", "--dry-run", "--precompile")
DRY_RUN_VALUES = ("--nnodes", "--master_addr", "--master-addr")


def add_neuron_flags(parser) -> None:
    group = parser.add_argument_group("neuron backend (Trn1 launch)")
    group.add_argument("--neuron_config", "--neuron-config", metavar="PATH",
                       help="Trainium profile JSON (neuron_configs/tp8_pp1.json ...): parallel degrees, processes per "
                            "node, compiler and runtime environment. Its degrees apply unless a flag or --config sets "
                            "them.")
    group.add_argument("--dry_run", "--dry-run", action="store_true",
                       help="Validate the configuration for --nnodes nodes and print the resolved profile, batch "
                            "arithmetic, NxD config and the exact commands; start nothing.")
    group.add_argument("--nnodes", type=int, default=int(os.environ.get("SLURM_JOB_NUM_NODES", 1)),
                       help="Trn1 nodes of the run (dry run arithmetic; torchrun sets the real world size).")
    group.add_argument("--master_addr", "--master-addr", default=os.environ.get("MASTER_ADDR", "localhost"),
                       help="Rendezvous host printed in the dry-run commands.")
    group.add_argument("--precompile", action="store_true",
                       help="Dry run: also print the neuron_parallel_compile pass (a few steps, same node count).")


def neuron_launch(args) -> dict:
    """What a Neuron run takes from its flags besides settings: the profile and the environment exported before
    torch_xla starts (the profile's compiler then runtime variables), and whether --init_from names NxD weights
    (then the model is built on the meta device and the weights loaded into its shards)."""
    profile = NeuronProfile.from_file(args.neuron_config) if args.neuron_config else default_profile()
    weights = args.init_from if args.init_from and _is_nxd_checkpoint(args.init_from) else None
    return {"profile": profile, "environment": profile.environment(), "weights_from": weights,
            "init_from": None if weights else args.init_from,
            "options": {"generator_path": getattr(args, "generator_path", None),
                        "compressor_path": getattr(args, "compressor_path", None)},
            "launcher_flags": ("--neuron_config", args.neuron_config) if args.neuron_config else ()}


def check(run, env) -> None:
    """The backend's own checks (degrees, batch, micro-batches, unsupported settings) for the world the launcher
    started, before any data or model is built; the dry run makes the same call for --nnodes nodes."""
    from scaledown.training.backends.neuron.nxd_config import check_run
    world = int(env.get("WORLD_SIZE") or 1)
    check_run(run.config, world, int(env.get("LOCAL_WORLD_SIZE") or world))


def build_neuron(config, run):
    from scaledown.training.backends.neuron.backend import NeuronBackend
    return NeuronBackend(config, run.profile, weights_from_checkpoint=run.weights_from,
                         describe=lambda: model_description(config, run.init_from, **run.options))


def model_description(config, init_from=None, generator_path=None, compressor_path=None):
    """The architecture the run builds: that of an --init_from released OSCAR folder or ScaleDown model folder (as
    saved: vocabularies grown by added tokens, its tokenizers), else the config's (NxD checkpoints hold no
    tokenizer: they load onto the config's model)."""
    from scaledown.checkpoint.description import ModelDescription
    from scaledown.models.oscar_format import is_released_folder
    from scaledown.models.serialization import CONFIG_FILE
    folder = init_from
    if folder and is_released_folder(folder):
        from scaledown.checkpoint.oscar_description import released_description
        return released_description(folder, config, generator_path, compressor_path)
    if folder and any(os.path.isfile(os.path.join(d, CONFIG_FILE)) for d in (folder, os.path.join(folder, "final"))):
        return ModelDescription.from_model_folder(folder, config)
    return ModelDescription.from_config(config)


def _is_nxd_checkpoint(path: str) -> bool:
    from scaledown.checkpoint import nxd_files
    if nxd_files.is_tag(path):
        return True
    return os.path.isdir(path) and any(nxd_files.is_tag(os.path.join(path, name)) for name in os.listdir(path))


def passthrough(argv: Sequence[str]) -> list[str]:
    """The user's flags for the printed commands, minus the dry-run-only ones."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token.split("=")[0] in DRY_RUN_VALUES:
            skip = "=" not in token
            continue
        if token not in DRY_RUN_ONLY:
            kept.append(token)
    return kept


def commands(args, profile, flags: Sequence[str]) -> dict[str, str]:
    """The torchrun command of each node (and the pre-compilation pass) a Trn1 cluster runs."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(profile.environment().items()))
    rest = " ".join(shlex.quote(a) for a in flags)
    torchrun = (f"torchrun --nnodes {args.nnodes} --nproc_per_node {profile.processes_per_node} --node_rank $NODE_RANK "
                f"--master_addr {args.master_addr} --master_port {profile.master_port} {LAUNCHER} {rest}").strip()
    out = {"train": f"{env} {torchrun}".strip()}
    if profile.precompile_steps:
        steps = f"--max_steps {profile.precompile_steps} --save_steps 0 --eval_steps 0"
        out["precompile"] = f"{env} neuron_parallel_compile {torchrun} {steps}".strip()
    return out


def dry_run(run, args, argv: Sequence[str]) -> int:
    """Print the resolved profile, rank grid, batch arithmetic, NxD config and commands. The checks are the backend's
    own (neuron/nxd_config.check_run, ParallelPlan.for_model); nothing here needs the Neuron stack."""
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.neuron.nxd_config import check_run, describe, nxd_config_kwargs
    from scaledown.training.backends.neuron.parallelize import layer_classes
    from scaledown.training.backends.neuron.trace import leaf_module_names
    config, profile = run.config, run.profile
    world = args.nnodes * profile.processes_per_node
    plan_ = check_run(config, world, profile.processes_per_node)
    grid = plan_.grid.describe()   # the rank grid's part done before the model plan (one pass over each module)
    skeleton = model_description(config, run.init_from, **run.options).skeleton()
    plan = ParallelPlan.for_model(skeleton, config.tensor_parallel_size, config.pipeline_parallel_size,
                                  config.kv_replication)
    kwargs = nxd_config_kwargs(config, layer_classes=layer_classes(skeleton, plan), num_microbatches=plan_.num_microbatches,
                               meta_device_init=run.weights_from is not None,
                               leaf_module_names=leaf_module_names(skeleton, plan.layer_names),
                               tracer_cls="torch + scaledown mask leaves (neuron/trace.py)")
    print(f"profile: {profile.path or '(default: one Trn1 node, no --neuron_config)'}"
          + (f" - {profile.description}" if profile.description else ""))
    print(f"nodes {args.nnodes} x processes per node {profile.processes_per_node} = {world} ranks")
    compressor = (f"the generator's first {config.num_compressor_layers} layers" if config.compressor_type == "n_layers"
                  else config.compressor_model_name)
    source = f", from {run.init_from or run.weights_from}" if run.init_from or run.weights_from else ""
    print(f"model: generator {config.generator_model_name}, {config.compressor_type} compressor ({compressor}), "
          f"preset {config.preset or 'none'}{source}"
          + ("" if getattr(args, "train_data", None) else "; no --train_data: the built-in synthetic task"))
    print(grid)
    print(f"batch: {plan_.batches.describe()}; pipeline micro-batches per step {plan_.num_microbatches}")
    print(f"plan: kv_replication {plan.kv_replication('generator')}; pipeline cuts {plan.pipeline_cuts or 'none'}; "
          f"{len(plan.modules)} modules become NxD parallel layers")
    print("neuronx_distributed_config: " + json.dumps(describe(kwargs), sort_keys=True))
    for name, command in commands(args, profile, passthrough(argv)).items():
        if name == "precompile" and not args.precompile:
            continue
        print(f"{name}: {command}")
    return 0
