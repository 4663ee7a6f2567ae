# ScaleDownConfig -> the arguments of neuronx_distributed_config (NxD 0.17), and pipeline micro-batch arithmetic.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from scaledown.config import ScaleDownConfig
from scaledown.errors import ConfigError
from scaledown.training.batching import BatchPlan, plan_batches
from scaledown.parallel.nxd_ranks import RankGrid

# ScaleDownModel's forward under pipeline parallelism takes the collated batch as these tensors (CPU, dim 0 = batch),
# plus the step's loss weights as one value per row (neuron/batches.with_loss_weights): the traced graph is fixed,
# the global batch's counts change every step
PIPELINE_INPUTS = ("compressor_input_ids", "compressor_attention_mask", "document_mask", "input_ids", "attention_mask",
                   "memory_slots", "labels", "reranking_scores", "reranking_mask", "ce_weight", "rerank_weight")


def resolve_microbatches(config: ScaleDownConfig, plan: BatchPlan) -> int:
    """Pipeline micro-batches per step: --num_microbatches, else the accumulation steps; must divide the rank's batch."""
    per_rank = plan.global_batch // plan.dp_size
    count = config.num_microbatches or plan.accumulation
    if per_rank % count:
        divisors = [d for d in range(1, per_rank + 1) if per_rank % d == 0]
        raise ConfigError(f"num_microbatches={count} does not divide the {per_rank} examples each data-parallel rank "
                          f"gets per step (batch_size {plan.global_batch} / {plan.dp_size} data-parallel ranks). "
                          f"Use one of {', '.join(map(str, divisors))}, or change batch_size.")
    return count


def refuse_unsupported(config: ScaleDownConfig, plan: BatchPlan, num_microbatches: int) -> None:
    """Settings the NxD path cannot run correctly, refused before anything is built."""
    if config.sequence_parallel:
        raise ConfigError("--sequence_parallel is not supported by the NxD backend: NxD's sequence-parallel layers "
                          "split activations along dimension 0 (sequence-first [S, B, H] order), while the "
                          "transformers compressor and generator run batch-first [B, S, H], so NxD would split the "
                          "batch, and the norms between the parallel layers would need sequence-parallel gradient "
                          "reductions. Use --sequence_parallel false: tensor parallelism still shards every "
                          "attention and MLP weight.")
    if config.pipeline_parallel_size > 1:
        rows = plan.global_batch // plan.dp_size // num_microbatches
        if plan.micro_batch > rows:
            raise ConfigError(f"--num_microbatches {num_microbatches} makes pipeline micro-batches of {rows} rows, "
                              f"but evaluation runs batches of --micro_batch_size {plan.micro_batch}, and NxD keeps "
                              f"one micro-batch shape for the whole run. Use --num_microbatches "
                              f"{plan.global_batch // plan.dp_size // plan.micro_batch} or a --micro_batch_size of "
                              f"at most {rows}.")


@dataclass
class NeuronRunPlan:
    """Where a run's ranks sit and how its batch splits: what `check_run` resolved."""
    grid: RankGrid
    batches: BatchPlan
    num_microbatches: int


def check_run(config: ScaleDownConfig, world_size: int, processes_per_node: int) -> NeuronRunPlan:
    """Every check of a Neuron run that needs no Neuron stack, in one place (the dry run and the backend): degrees
    against the world size, the batch against the data-parallel ranks, pipeline micro-batches, unsupported
    settings. ConfigError naming the flag and the fix."""
    grid = RankGrid.for_config(config, world_size, processes_per_node)
    batches = plan_batches(config.batch_size, config.micro_batch_size, grid.dp)
    micro = resolve_microbatches(config, batches)
    refuse_unsupported(config, batches, micro)
    if config.pipeline_parallel_size > 1 and config.generator_warmup_ratio > 0:
        raise ConfigError("generator_warmup_ratio > 0 with --pipeline_parallel_size > 1: the warm-up reads documents "
                          "as text (another traced graph) and recopies generator layers into the compressor across "
                          "pipeline stages. Pass --generator_warmup_ratio 0 (the tiny preset warms up by default), or warm up "
                          "with --pipeline_parallel_size 1, then continue with --init_from.")
    return NeuronRunPlan(grid, batches, micro)


def mixed_precision(config: ScaleDownConfig) -> dict[str, bool]:
    """fp32 master weights and gradient accumulation come with ZeRO-1 under bf16 (NxD refuses them without ZeRO-1)."""
    master = bool(config.zero1 and config.use_bf16)
    return {"use_master_weights": master, "use_fp32_grad_acc": master, "use_master_weights_in_ckpt": False}


def nxd_config_kwargs(config: ScaleDownConfig, *, layer_classes: Sequence[type], num_microbatches: int,
                      meta_device_init: bool, param_init_fn: Optional[Callable] = None,
                      leaf_module_names: Sequence[str] = (), tracer_cls: Any = "torch") -> dict[str, Any]:
    """Keyword arguments of neuronx_distributed.trainer.neuronx_distributed_config for this run.
    `tracer_cls`: what NxDPPModel traces with (the backend passes neuron_trace.tracer_class(...))."""
    pp = config.pipeline_parallel_size
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": pp,
        "optimizer_config": {"zero_one_enabled": bool(config.zero1), "grad_clipping": config.max_grad_norm > 0,
                             "max_grad_norm": float(config.max_grad_norm or 1.0)},
        # "full" needs an HF PreTrainedModel at the root; ScaleDownModel is not one, so name the layer classes
        "activation_checkpoint_config": list(layer_classes) if config.gradient_checkpointing else None,
        "sequence_parallel": bool(config.sequence_parallel),
        "model_init_config": {"sequential_move_factor": 11, "meta_device_init": meta_device_init,
                              "param_init_fn": param_init_fn if meta_device_init else None},
        "mixed_precision_config": mixed_precision(config),
    }
    if pp > 1:
        if len(set(layer_classes)) != 1:
            names = sorted({c.__name__ for c in layer_classes})
            raise ConfigError(f"--pipeline_parallel_size {pp}: NxD's auto-partition splits the model at one decoder-layer "
                              f"class, but the compressor and generator use {', '.join(names)}. Use compressor_type "
                              f"n_layers (the compressor is a copy of generator layers) or --pipeline_parallel_size 1.")
        kwargs["pipeline_config"] = {
            "transformer_layer_cls": layer_classes[0],
            "num_microbatches": num_microbatches,
            "output_loss_value_spec": True,          # the pipeline module returns the loss tensor itself
            "input_names": list(PIPELINE_INPUTS),
            "auto_partition": True,                  # cuts by create_partitions: the plan's stage rule
            "broadcast_and_average_loss": True,      # every rank logs the same DP-averaged loss
            # the NxDOptimizer reduces data-parallel gradients (or ZeRO-1 does): without this flag NxDPPModel's
            # _reduce_grads_task would all-reduce them a second time (pipeline/model.py)
            "use_optimizer_wrapper": True,
            "return_loss_on_cpu": False,             # read in a step closure, not mid-graph
            "use_zero1_optimizer": bool(config.zero1),
            "leaf_module_cls": list(leaf_module_names),
            "tracer_cls": tracer_cls,
        }
    return kwargs


def describe(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs with classes and functions as names (for the dry run and logs)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, type) or callable(value):
            return getattr(value, "__name__", str(value))
        return value
    return plain(kwargs)
