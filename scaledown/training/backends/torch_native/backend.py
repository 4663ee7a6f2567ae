# TorchBackend: FSDP2 (fully_shard per decoder layer, HSDP across replicas), mixed precision, DCP checkpoints.
"""The PyTorch-native engine (torch.distributed.fsdp.fully_shard, DeviceMesh, torch.distributed.checkpoint), launched
by torchrun. CPU ranks talk gloo; GPU ranks NCCL (host tensors: gloo).

Sharding: every decoder layer of the generator and of the compressor backbone is one FSDP2 unit, the rest (embeddings,
head, memory tokens, projection) joins the root unit. Frozen weights are sharded too; they get no gradients.
Precision: weights are kept in float32 (the optimizer's master copy) and computed in bf16 when use_bf16 (FSDP2
MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)). Gradients are reduce-scattered every micro-batch and
accumulate sharded; FSDP2 averages them over the data-parallel ranks (Backend.gradient_average cancels that).
Folder (hub-style) generators are built on the meta device and, once sharded, filled rank by rank from their
safetensors files (meta_load.py): no rank holds the whole model. Under --pp the meta structure is cut to the stage
first, so a rank loads only its stage's slices. The tiny random presets have no files and build whole.
Pipeline stages (--pp > 1): pipeline_stages.py cuts the model by the plan's stage rule, pipeline_schedule.py runs a
step's micro-batches through Schedule1F1B / ScheduleGPipe; each stage is TP-sharded over "tp" (--tp > 1: a 3-D mesh
pp x dp x tp), then FSDP2-sharded over its data-parallel ranks.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from scaledown.config import ScaleDownConfig
from scaledown.models.compressor_builders import decoder_base
from scaledown.models.generator import base_causal_lm
from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput
from scaledown.models.serialization import save_pretrained
from scaledown.training.backends.base import Backend, StepNorm, detached
from scaledown.training.backends.local import resolve_device
from scaledown.training.backends.torch_native import dcp_checkpoint, meta_load
from scaledown.training.backends.torch_native import pipeline_schedule as pipe
from scaledown.training.backends.torch_native import tensor_parallel as tp_native
from scaledown.training.backends.torch_native.clipping import clip_grad_norm
from scaledown.training.backends.torch_native.mesh import (build_mesh, check_torch_neuron, data_parallel_mesh,
                                                           data_parallel_rank, init_process_group, local_device,
                                                           mesh_shape)
from scaledown.training.backends.torch_native.pipeline_schedule import check_pipeline_config
from scaledown.training.batching import plan_batches
from scaledown.training.throughput import cuda_peak_flops, peak_memory_gb


def sharding_units(model: ScaleDownModel) -> list[torch.nn.Module]:
    """The modules that become FSDP2 units before the root: each decoder layer of the generator and of the
    compressor backbone (a layer's weights are gathered just before it runs and freed after)."""
    units = list(getattr(decoder_base(base_causal_lm(model.generator)), "layers", []))
    backbone = model.compressor.backbone
    for owner in (backbone, getattr(backbone, "model", None), getattr(backbone, "encoder", None)):
        layers = getattr(owner, "layers", None) or getattr(owner, "layer", None)
        if isinstance(layers, torch.nn.ModuleList):
            units.extend(layers)
            break
    return units


def refresh_mixed_precision(model: torch.nn.Module) -> None:
    """FSDP2 fixes each unit's gradient reduce dtype at the first forward from the weights trainable then
    (torch 2.13 FSDPParamGroup._init_mp_dtypes, in lazy_init): a unit frozen during the generator warm-up (the
    compressor's layers) got none, and its bf16 gradients failed after the warm-up ("grad_dtype Float"). Recomputed
    whenever a phase changes which weights train."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            for group in module._get_fsdp_state()._fsdp_param_groups:
                group._init_mp_dtypes()


class TorchBackend(Backend):
    name = "torch"
    load_on_meta = True   # False: build folder models whole on every rank (the path before meta_load.py)

    def __init__(self, config: ScaleDownConfig, timeout_s: float = 1800.0):
        self.config = config
        device_type = "neuron" if config.device_type == "neuron" else resolve_device(config.device_type).type
        if device_type == "neuron":
            check_torch_neuron()
        init_process_group(device_type, timeout_s)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if config.pipeline_parallel_size > 1:   # tied head, too many stages, warm-up: refused before the mesh
            check_pipeline_config(config)
        self.shape = mesh_shape(self.world_size, config.data_parallel_replicate_size,
                                config.tensor_parallel_size, config.pipeline_parallel_size)
        tp_native.check_settings(config)
        self.device = local_device(device_type)
        self.mesh = build_mesh(self.shape, device_type)
        # the tp ranks and the pipeline stages of one data-parallel rank read the same micro-batches
        self.dp_mesh = data_parallel_mesh(self.mesh)
        self.dp_rank, self.dp_size = data_parallel_rank(self.mesh, self.shape), self.shape.dp
        self.tp_plan = None
        self.loss_context = tp_native.loss_context_for(self.shape.tp)   # per step: no tp lookup
        self.pipeline = None
        if self.shape.pipeline > 1:   # pipeline stages: torch_native/pipeline_schedule.py
            self.batches = plan_batches(config.batch_size, config.micro_batch_size, self.dp_size)
            pipe.check_pipeline_batches(config, self.shape.pipeline, self.batches.accumulation)
            self.pipeline = pipe.PipelineParallel(config, self.mesh, self.device)
        if self.rank == 0:
            print(f"torch backend mesh: {self.shape.describe()}", flush=True)
        bf16 = config.use_bf16 and (device_type in ("cpu", "neuron") or torch.cuda.is_bf16_supported())
        self.compute_dtype = torch.bfloat16 if bf16 else torch.float32
        self._model: Optional[ScaleDownModel] = None
        # (build, model) while build_model has left the model's folder weights on meta, until setup fills them
        self._meta: Optional[tuple[meta_load.MetaBuild, ScaleDownModel]] = None
        self.optimizer = None
        self.scheduler = None

    @property
    def model(self) -> ScaleDownModel:
        return self._model

    def describe(self) -> str:
        return f"{self.shape.describe()}, compute in {str(self.compute_dtype).replace('torch.', '')}"

    # ---- placement -----------------------------------------------------------------------------------------
    def build_model(self, build) -> ScaleDownModel:
        """A folder generator's weights stay on the meta device until setup has sharded them (meta_load.py)."""
        if not self.load_on_meta or self.config.base_is_random:
            return build()
        meta = meta_load.MetaBuild()
        model = meta.build(build)
        self._meta = (meta, model) if meta.sources else None   # nothing deferred (e.g. from_pretrained): as built
        if meta.sources and self.rank == 0:
            folders = sorted({folder for folder, _ in meta.sources.values()})
            print(f"built on the meta device: {len(meta.sources)} weights of {', '.join(folders)}; after sharding "
                  f"each rank reads only its own slices from the safetensors files", flush=True)
        return model

    def setup(self, model: ScaleDownModel) -> None:
        # the root returns ScaleDownOutput, some of whose tensors are views (scores); the loop only reads and
        # detaches them, never edits them in place, which is what FSDP2's warning is about
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        meta = self._meta[0] if self._meta is not None and self._meta[1] is model else None
        if meta is None:   # on meta: to_empty(device) after sharding
            model.to(self.device)
        for p in model.parameters():   # one float32 master copy for every weight: trainable sets change by phase
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
        plan = None
        if self.pipeline is not None:   # cut first, so TP and FSDP2 place only the stage (TP plan: the whole model's)
            plan = tp_native.build_plan(model, self.shape.tp) if self.shape.tp > 1 else None
            stage, layers = self.pipeline.cut(model, self.batches.micro_batch)
        if self.shape.tp > 1:   # DTensor TP from the plan first, then FSDP2 over the data-parallel dims (torchtitan)
            self.tp_plan = tp_native.parallelize(model, self.mesh["tp"], plan)
        policy = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
        if self.pipeline is not None:   # stage layers, then the stage; no reshard between micro-batches (torchtitan)
            mesh = data_parallel_mesh(self.mesh)
            for unit in layers:
                fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
            fully_shard(stage, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
            if meta is not None:   # only the stage's modules are left to materialise and fill
                meta_load.load_weights(model, meta, self.device, root=stage)
                self._meta = None
            self._model = model
            return
        for unit in sharding_units(model):
            fully_shard(unit, mesh=self.dp_mesh, mp_policy=policy)
        fully_shard(model, mesh=self.dp_mesh, mp_policy=policy)
        if meta is not None:
            meta_load.load_weights(model, meta, self.device)
            self._meta = None
        register_fsdp_forward_method(model, "generate_from_batch")   # evaluation generates outside forward
        self._model = model

    def prepare(self, param_groups, lr_lambda, accumulation: int) -> None:
        refresh_mixed_precision(self._model)   # each phase trains other weights
        groups = [g for g in param_groups if g["params"]]
        if self.pipeline is not None:   # every stage gets every group (some empty): one schedule state for all
            groups = self.pipeline.uniform_groups(groups)
        cfg = self.config
        self.optimizer = torch.optim.AdamW(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        if self.pipeline is not None:
            self.pipeline.build_schedule(accumulation)

    def enable_gradient_checkpointing(self) -> None:
        self._model.enable_gradient_checkpointing()

    # ---- steps ---------------------------------------------------------------------------------------------
    def to_device(self, batch):
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, batches, documents_as: str, norm: StepNorm):
        if self.pipeline is None:
            return super().train_step(batches, documents_as, norm)
        batches = [self.to_device(b) for b in batches]
        return self.pipeline.train_step(batches, norm, self.gradient_average), self.optimizer_step()

    def forward_backward(self, batch, documents_as: str, norm: StepNorm) -> ScaleDownOutput:
        with self.loss_context():
            out = self._model(batch, documents_as=documents_as)
            (norm.objective(out) * self.gradient_average).backward()
        return detached(out)

    def optimizer_step(self) -> torch.Tensor:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = clip_grad_norm(params, max_norm, self.pipeline.group if self.pipeline else None, self.device)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def learning_rates(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    def eval_forward(self, batch, documents_as: str) -> ScaleDownOutput:
        if self.pipeline is None:
            with self.loss_context():
                return self._model(batch, documents_as=documents_as)
        ce, rerank, tokens, scored, correct = self.pipeline.forward_only(batch)
        reranking = self.config.enable_reranking
        return ScaleDownOutput(loss=ce / tokens.clamp(min=1), ce_loss=ce / tokens.clamp(min=1), rerank_loss=None,
                               num_tokens=tokens, ce_sum=ce, rerank_sum=rerank if reranking else None,
                               num_scored=scored if reranking else None, num_correct=correct)

    def generate(self, batch, documents_as: str):
        # no stage holds the whole model: evaluation under --pp reports losses and token accuracy, no answers
        if self.pipeline is not None:
            return None
        with tp_native.gathered_logits(self._model, self.tp_plan):
            return super().generate(batch, documents_as)

    def generation_kwargs(self) -> dict[str, Any]:
        # every rank runs the same number of decoding steps: each step all-gathers the layers collectively
        return {"synced_gpus": True} if self.world_size > 1 else {}

    # ---- collectives ---------------------------------------------------------------------------------------
    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over the data-parallel ranks: the tp ranks of one data-parallel rank report the same values, so the
        world sum is divided by tp (one collective over all ranks, which also carries any rank's flag)."""
        if self.world_size > 1:
            dist.all_reduce(values)   # host tensors over gloo, device tensors over NCCL (one process group)
        # the tp ranks and the stages of one data-parallel rank report the same values (as NxD's backend divides)
        copies = self.shape.tp * self.shape.pipeline
        if copies > 1:
            return values / copies if values.is_floating_point() else values // copies
        return values

    def barrier(self) -> None:
        dist.barrier()

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        path = os.path.join(root, tag)
        if self.is_main:
            os.makedirs(root, exist_ok=True)
        state = {**client_state, "scheduler": self.scheduler.state_dict()}
        dcp_checkpoint.save(self._model, self.optimizer, path, state, self.is_main, self.barrier)
        return path

    def checkpoint_files(self, path: str) -> list[str]:
        return dcp_checkpoint.files(path)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        names = [group.get("name") for group in self.optimizer.param_groups]
        client = dcp_checkpoint.load(self._model, self.optimizer, path)
        for group, name in zip(self.optimizer.param_groups, names):   # an empty group (another stage's) loses it
            group.setdefault("name", name)
        if "scheduler" in client:
            self.scheduler.load_state_dict(client["scheduler"])
        else:   # a converted checkpoint: the schedule continues at its Adam step
            dcp_checkpoint.resume_schedule(self.scheduler, client)
        return client

    def export_pretrained(self, directory: str) -> None:
        """The Hugging Face folder: full weights gathered to rank 0's CPU (get_model_state_dict, full_state_dict)."""
        if self.pipeline is not None:   # each stage holds its own weights: gathered from the stages to rank 0
            state = self.pipeline.full_state(self._model, self.dp_rank)
        else:
            state = get_model_state_dict(self._model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            compressor = {k[len("compressor."):]: v for k, v in state.items() if k.startswith("compressor.")}
            generator = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
            if self.pipeline is None:
                save_pretrained(self._model, directory, state_dict=compressor, generator_state_dict=generator)
            else:
                with self.pipeline.whole_structure(self._model) as model:
                    save_pretrained(model, directory, state_dict=compressor, generator_state_dict=generator)
        self.barrier()

    # ---- reporting -----------------------------------------------------------------------------------------
    def memory_gb(self) -> Optional[float]:
        return peak_memory_gb(self.device)

    def peak_flops(self) -> Optional[float]:
        return cuda_peak_flops(self.compute_dtype) if self.device.type == "cuda" else None

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
