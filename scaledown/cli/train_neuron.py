# `launchers/train_trn1.py`: every train.py flag plus the Trn1 launch flags; --dry_run validates without Neuron.
from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Optional, Sequence

from scaledown.cli.args import build_parser
from scaledown.cli.errors import run_cli
from scaledown.cli.training_run import run_training, train_config

DESCRIPTION = ("Train ScaleDown on Trn1 with NeuronX Distributed (tensor + pipeline parallel, ZeRO-1). Start one "
               "process per NeuronCore with torchrun (`sbatch slurm/train_trn1.sh` does it on a SLURM cluster). "
               "--neuron_config picks a layout from neuron_configs/; --dry_run checks the configuration and prints "
               "the layout, the batch arithmetic and the commands without Neuron installed.")
LAUNCHER = "launchers/train_trn1.py"


def add_neuron_flags(parser) -> None:
    group = parser.add_argument_group("trainium launch")
    group.add_argument("--dry_run", "--dry-run", action="store_true",
                       help="Validate the configuration for --nnodes nodes and print the resolved layout, batch "
                            "arithmetic, NxD config and the exact commands; start nothing.")
    group.add_argument("--nnodes", type=int, default=int(os.environ.get("SLURM_JOB_NUM_NODES", 1)),
                       help="Trn1 nodes of the run (dry run arithmetic; torchrun sets the real world size).")
    group.add_argument("--master_addr", "--master-addr", default=os.environ.get("MASTER_ADDR", "localhost"),
                       help="Rendezvous host printed in the dry-run commands.")
    group.add_argument("--precompile", action="store_true",
                       help="Dry run: also print the neuron_parallel_compile pass (a few steps, same node count).")


def resolve(args):
    """(config, layout, world size, rank grid, batch plan, micro-batches, plan): every check, no Neuron needed."""
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.neuron_config import resolve_microbatches
    from scaledown.training.batching import plan_batches
    from scaledown.training.neuron_layout import NeuronLayout, default_layout
    from scaledown.training.neuron_ranks import RankGrid
    config = train_config(args)
    layout = NeuronLayout.from_file(args.neuron_config) if args.neuron_config else default_layout()
    world = args.nnodes * layout.processes_per_node
    grid = RankGrid(world, config.tensor_parallel_size, config.pipeline_parallel_size, layout.processes_per_node)
    batches = plan_batches(config.batch_size, config.micro_batch_size, grid.dp)
    micro = resolve_microbatches(config, batches)
    skeleton = model_description(config, args).skeleton()
    plan = ParallelPlan.for_model(skeleton, config.tensor_parallel_size, config.pipeline_parallel_size,
                                  config.kv_replication)
    return config, layout, world, grid, batches, micro, plan, skeleton


def commands(args, layout, passthrough: Sequence[str]) -> dict[str, str]:
    """The torchrun command of each node (and the pre-compilation pass) a Trn1 cluster runs."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(layout.environment().items()))
    rest = " ".join(shlex.quote(a) for a in passthrough)
    torchrun = (f"torchrun --nnodes {args.nnodes} --nproc_per_node {layout.processes_per_node} --node_rank $NODE_RANK "
                f"--master_addr {args.master_addr} --master_port {layout.master_port} {LAUNCHER} {rest}").strip()
    out = {"train": f"{env} {torchrun}".strip()}
    if layout.precompile_steps:
        steps = f"--max_steps {layout.precompile_steps} --save_steps 0 --eval_steps 0"
        out["precompile"] = f"{env} neuron_parallel_compile {torchrun} {steps}".strip()
    return out


def dry_run(args, passthrough: Sequence[str]) -> int:
    from scaledown.training.backends.neuron_config import describe, nxd_config_kwargs
    from scaledown.training.backends.neuron_parallelize import layer_classes
    config, layout, world, grid, batches, micro, plan, skeleton = resolve(args)
    from scaledown.training.backends.neuron_trace import leaf_module_names
    kwargs = nxd_config_kwargs(config, layer_classes=layer_classes(skeleton, plan), num_microbatches=micro,
                               meta_device_init=False, leaf_module_names=leaf_module_names(skeleton, plan.layer_names),
                               tracer_cls="torch + scaledown mask leaves (neuron_trace.py)")
    print(f"layout: {layout.path or '(default: one Trn1 node, no --neuron_config)'}"
          + (f" - {layout.description}" if layout.description else ""))
    print(f"nodes {args.nnodes} x processes per node {layout.processes_per_node} = {world} ranks")
    print(grid.describe())
    print(f"batch: {batches.describe()}; pipeline micro-batches per step {micro}")
    print(f"plan: kv_replication {plan.kv_replication('generator')}; pipeline cuts {plan.pipeline_cuts or 'none'}; "
          f"{len(plan.modules)} modules become NxD parallel layers")
    print("neuronx_distributed_config: " + json.dumps(describe(kwargs), sort_keys=True))
    for name, command in commands(args, layout, passthrough).items():
        if name == "precompile" and not args.precompile:
            continue
        print(f"{name}: {command}")
    return 0


def neuron_main(argv: Optional[Sequence[str]] = None, prog: str = LAUNCHER) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog, DESCRIPTION)
    add_neuron_flags(parser)
    args = parser.parse_args(argv)
    if args.dry_run:
        launch_only = {"--dry_run", "--dry-run", "--precompile"}
        passthrough, skip = [], False
        for token in argv:   # the printed commands carry the user's flags, minus the dry-run-only ones
            if skip:
                skip = False
                continue
            if token.split("=")[0] in ("--nnodes", "--master_addr", "--master-addr"):
                skip = "=" not in token
                continue
            if token not in launch_only:
                passthrough.append(token)
        return dry_run(args, passthrough)
    from scaledown.cli.task_check import check_task_launch
    check_task_launch(LAUNCHER, argv)
    config = train_config(args)
    weights = None
    if args.init_from and _is_nxd_checkpoint(args.init_from):
        weights, args.init_from = args.init_from, None   # NxD weights: build on the meta device, then load them

    def backend_factory(cfg):
        from scaledown.training.backends.neuron import NeuronBackend
        from scaledown.training.neuron_layout import NeuronLayout
        layout = NeuronLayout.from_file(args.neuron_config) if args.neuron_config else None
        return NeuronBackend(cfg, layout, weights_from_checkpoint=weights, describe=lambda: model_description(cfg, args))

    layout_flags = ["--neuron_config", args.neuron_config] if args.neuron_config else []
    return run_training(config, args, backend_factory, prog=prog, launcher_flags=layout_flags)


def model_description(config, args):
    """The architecture the run builds: that of an --init_from released OSCAR folder or ScaleDown model folder (as
    saved: vocabularies grown by added tokens, its tokenizers), else the config's (NxD checkpoints hold no
    tokenizer: they load onto the config's model)."""
    from scaledown.checkpoint.description import ModelDescription
    from scaledown.checkpoint.oscar_format import is_released_folder
    from scaledown.models.serialization import CONFIG_FILE
    folder = args.init_from
    if folder and is_released_folder(folder):
        from scaledown.checkpoint.oscar_description import released_description
        return released_description(folder, config, args.generator_path, args.compressor_path)
    if folder and any(os.path.isfile(os.path.join(d, CONFIG_FILE)) for d in (folder, os.path.join(folder, "final"))):
        return ModelDescription.from_model_folder(folder, config)
    return ModelDescription.from_config(config)


def _is_nxd_checkpoint(path: str) -> bool:
    from scaledown.checkpoint import nxd_files
    if nxd_files.is_tag(path):
        return True
    return os.path.isdir(path) and any(nxd_files.is_tag(os.path.join(path, name)) for name in os.listdir(path))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: neuron_main(argv))
