# NeuronX Distributed backend (Trn1): tensor + pipeline parallelism and ZeRO-1 behind the shared training loop.
"""How the pieces fit (NxD 0.17 / Neuron 2.28, torch-xla 2.9):

* Start: the Neuron stack is imported and version-checked, torch.distributed starts with the "xla" backend
  (torchrun's env://), degrees are checked against the world size, heads and vocabulary (ParallelPlan on a
  meta skeleton) and the micro-batches against the batch: all before anything is compiled.
* Model: `build_model` hands NxD's initialize_parallel_model a model_fn that builds ScaleDownModel (on the
  meta device when weights come from a checkpoint) and applies the shared plan from outside
  (neuron/parallelize.py). PP > 1 wraps the compressor + generator (PipelineModule) in NxDPPModel with
  auto_partition over the decoder layers; its cuts equal plan.pipeline_cuts.
* Steps: `train_step` pads the step's micro-batches to the run's static shapes (neuron/batches.StaticShapes:
  from the configured lengths, so NxDPPModel's traced inter-stage shapes hold for every call, evaluation
  included), feeds them through MpDeviceLoader (TP) or NxDPPModel.run_train (PP), sums KV-replica gradients
  where NxD leaves them (param.grad, or main_grad under ZeRO-1 + bf16's accumulation hook), steps the
  NxDOptimizer (DP all-reduce or ZeRO-1, clipping at --max_grad_norm) and reads the losses and grad norm in an
  xm.add_step_closure after xm.mark_step: nothing forces a graph sync mid-step.
* Checkpoints: nxd.save_checkpoint / load_checkpoint (trainer format, xser, num_kept_ckpts) into
  OUTPUT_DIR/checkpoints/step_N with the loop's client state as user_content; a tag converted by
  `scaledown convert --to nxd` (no user_content) loads weights and, when present, optimizer state.
* Host-side numbers (log sums, the SIGTERM flag, eval totals) travel over a gloo group, never the device.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint import nxd_files
from scaledown.checkpoint.description import ModelDescription
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError
from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput, loss_counts
from scaledown.models.tied_weights import drop_aliases, retie, tied_aliases
from scaledown.parallel import ParallelPlan
from scaledown.training.backends.base import Backend, StepNorm
from scaledown.training.backends.neuron import batches as nb
from scaledown.training.backends.neuron.profile_file import NeuronProfile, default_profile
from scaledown.training.backends.neuron.nxd_config import check_run, nxd_config_kwargs
from scaledown.training.backends.neuron.parallelize import (apply_plan, kv_replica_groups, layer_classes,
                                                            materialise_buffers, vocab_parallel_token_hits,
                                                            vocab_parallel_token_loss)
from scaledown.training.backends.neuron.stack import load_stack
from scaledown.training.backends.neuron.trace import leaf_module_names, tracer_class
from scaledown.training.throughput import neuroncore_peak_flops

BACKEND_STATE = "scaledown_backend"


def _init_distributed() -> None:
    if dist.is_initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29511")):
        os.environ.setdefault(key, value)   # plain `python train.py --device trainium`: one process
    dist.init_process_group("xla")


class NeuronBackend(Backend):
    name = "neuron"
    host_gather_indices = False   # static shapes: every batch is padded by key and forward selects nothing

    def __init__(self, config: ScaleDownConfig, profile: Optional[NeuronProfile] = None,
                 weights_from_checkpoint: Optional[str] = None, describe: Optional[Callable] = None):
        """`weights_from_checkpoint`: an NxD tag (a run's checkpoint or `scaledown convert --to nxd` output) the
        weights will come from; the model is then built on the meta device and never materialised on the host.
        `describe`: () -> ModelDescription of the model build_model builds when the config alone does not say it
        (a released OSCAR folder: grown vocabularies and tokenizers); default ModelDescription.from_config."""
        self.config, self.profile = config, profile or default_profile()
        self.stack = load_stack()
        for key, value in self.profile.environment().items():
            os.environ.setdefault(key, value)
        _init_distributed()
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        plan = check_run(config, self.world_size, local)   # the dry run's checks, the same function (one place)
        self.grid, self.batch_plan, self.num_microbatches = plan.grid, plan.batches, plan.num_microbatches
        self.dp_size = self.grid.dp
        self.weights_from = weights_from_checkpoint
        self.describe = describe
        self.host_group = dist.new_group(backend="gloo")   # host-side sums and flags, never an XLA graph
        self.object_group = self.host_group   # gather_objects (every rank's RNG state in a checkpoint)
        self.device = self.stack.xm.xla_device()
        self._model: Optional[ScaleDownModel] = None
        self.nxd_model = None
        self.optimizer = None
        self.plan = None
        self._kv_shared: dict[str, int] = {}
        self._shapes: dict[tuple, nb.StaticShapes] = {}
        self._base_lrs: dict[str, float] = {}
        self._lr_lambda: Callable[[int], float] = lambda step: 1.0
        self._schedule_step = 0
        self._read: dict[str, Any] = {}

    # ---- where this rank sits ------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == self.grid.loss_rank()

    @property
    def model(self) -> ScaleDownModel:
        return self._model

    # ---- model ---------------------------------------------------------------------------------------
    def _skeleton(self) -> ScaleDownModel:
        return (self.describe() if self.describe else ModelDescription.from_config(self.config)).skeleton()

    def build_model(self, build: Callable[[], ScaleDownModel]) -> ScaleDownModel:
        cfg, stack = self.config, self.stack
        skeleton = self._skeleton()   # meta: every divisibility error before anything is built or compiled
        plan = ParallelPlan.for_model(skeleton, cfg.tensor_parallel_size, cfg.pipeline_parallel_size,
                                      cfg.kv_replication)
        meta = self.weights_from is not None
        self.nxd_config = stack.nxd.neuronx_distributed_config(**nxd_config_kwargs(
            cfg, layer_classes=layer_classes(skeleton, plan), num_microbatches=self.num_microbatches,
            meta_device_init=meta, param_init_fn=_init_on_host,
            leaf_module_names=leaf_module_names(skeleton, plan.layer_names),
            tracer_cls=tracer_class(stack.pipeline_trace.TorchTracerWrapper)))
        ps = stack.parallel_state
        self.dp_rank = ps.get_data_parallel_rank()
        if ps.get_data_parallel_size() != self.dp_size:
            raise RuntimeError(f"NxD reports data-parallel size {ps.get_data_parallel_size()}, expected {self.dp_size}")
        tp_rank = ps.get_tensor_model_parallel_rank()

        # a meta skeleton is built before NxD's init_on_device(meta) context: that context puts every parameter
        # created inside it on meta, also the real 1-row stand-in the description builds the compressor with
        prebuilt = self._skeleton() if meta else None

        def model_fn():
            model = prebuilt if meta else build()
            model.static_shapes = True
            if cfg.use_bf16:
                model.to(torch.bfloat16)
            self.plan = ParallelPlan.for_model(model, cfg.tensor_parallel_size, cfg.pipeline_parallel_size,
                                               cfg.kv_replication)
            self._kv_shared = apply_plan(model, self.plan, stack.layers, tp_rank, cfg.sequence_parallel)
            if any(spec.loss == "parallel_cross_entropy" for spec in self.plan.modules.values()):
                model.token_loss = vocab_parallel_token_loss(stack.layers)
                model.token_hits = vocab_parallel_token_hits(stack.layers)
            self._model = model
            return nb.PipelineModule(model) if cfg.pipeline_parallel_size > 1 else model

        self.nxd_model = stack.nxd.initialize_parallel_model(self.nxd_config, model_fn)
        self._kv_groups = kv_replica_groups(ps.get_tensor_model_parallel_replica_groups(),
                                            set(self._kv_shared.values()))
        if meta:
            self._load(self.weights_from, optimizer=False)
        return self._model

    def setup(self, model: ScaleDownModel) -> None:
        if self.nxd_model is None:   # the model was built outside build_model: parallelise it now
            self.build_model(lambda: model)
        elif model is not self._model:
            raise RuntimeError("NeuronBackend.setup got another model than the one build_model returned")

    def enable_gradient_checkpointing(self) -> None:
        """NxD applies activation checkpointing to the decoder layers (activation_checkpoint_config) with torch-xla's
        *reentrant* checkpoint: a layer whose inputs need no gradient would give its weights none. No phase today
        feeds one (the warm-up trains the embeddings; the others mix in memory vectors that need gradients), but
        a frozen embedding reading text would; as transformers' enable_input_require_grads does, every token
        embedding's output is marked as needing a gradient, so the first checkpointed layer always gets one."""
        def needs_grad(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point() and not output.requires_grad:
                output.requires_grad_(True)
        embeddings = (torch.nn.Embedding, getattr(self.stack.layers, "ParallelEmbedding", torch.nn.Embedding))
        for module in self._model.modules():
            if isinstance(module, embeddings):
                module.register_forward_hook(needs_grad)

    def collate_options(self, max_documents: int) -> dict[str, Any]:
        """Documents per row fixed per run (static shapes): under PP one count for training and evaluation."""
        cfg = self.config
        if cfg.pipeline_parallel_size > 1:
            return {"pad_documents_to": max(max_documents, cfg.num_documents_train, cfg.num_documents_eval)}
        return {"pad_documents_to": max_documents}

    # ---- optimizer and schedule ------------------------------------------------------------------------
    def prepare(self, param_groups, lr_lambda, accumulation: int) -> None:
        cfg = self.config
        local = {id(p) for _, p in self.nxd_model.named_parameters()}   # this pipeline stage's parameters
        names = {id(p): n.replace("_checkpoint_wrapped_module.", "") for n, p in self._model.named_parameters()}
        groups, extra = [], {}
        if cfg.zero1 and cfg.max_grad_norm > 0:
            # NxD builds its zero1_configs without optimizer_config["max_grad_norm"] (trainer/trainer.py), so
            # torch-xla's ZeroRedundancyOptimizer would clip at its default 1.0: pass ours through its **defaults
            extra["max_norm"] = float(cfg.max_grad_norm)
        for group in param_groups:
            params = [p for p in group["params"] if id(p) in local]
            # every group, also one without parameters on this stage: the converters write every group to every
            # stage's file (optimizer loads match groups by position); named parameters: shards record
            # param_names, which the converters read
            groups.append({"name": group["name"], "lr": group["lr"], "params": [(names[id(p)], p) for p in params],
                           **({} if params else {"param_names": []})})   # torch: names in every group or none
        self._base_lrs = {g["name"]: g["lr"] for g in param_groups}
        self.optimizer = self.stack.nxd.initialize_parallel_optimizer(
            self.nxd_config, torch.optim.AdamW, groups, lr=param_groups[0]["lr"],
            betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay, **extra)
        self._lr_lambda = lr_lambda
        self._set_schedule_step(0)

    def _set_schedule_step(self, step: int) -> None:
        self._schedule_step = step
        for group in self.optimizer.param_groups:
            group["lr"] = self._base_lrs[group["name"]] * self._lr_lambda(step)

    def learning_rates(self) -> dict[str, float]:
        """Every group's rate, also those with no parameter on this pipeline stage."""
        return {name: base * self._lr_lambda(self._schedule_step) for name, base in self._base_lrs.items()}

    # ---- steps -------------------------------------------------------------------------------------------
    def to_device(self, batch):
        return {k: v.to(self.device) for k, v in batch.items()}

    def _padded(self, batches, documents_as: str, evaluation: bool = False):
        """Batches at the run's static shapes for this documents mode and document count (under PP, evaluation
        batches also get the pipeline micro-batch's rows)."""
        documents = batches[0]["document_mask"].shape[1]
        rows = None
        if evaluation and self.config.pipeline_parallel_size > 1:
            rows = self.batch_plan.global_batch // self.dp_size // self.num_microbatches
        key = (documents_as, documents, rows)
        if key not in self._shapes:
            self._shapes[key] = nb.StaticShapes.for_inputs(self._model.inputs, documents, documents_as, rows)
        return self._shapes[key].pad(batches)

    @property
    def gradient_average(self) -> float:
        """NxD's optimizer divides gradients by the data-parallel size; NxDPPModel.run_train also backpropagates
        each micro-batch's loss / num_microbatches."""
        pipeline = self.num_microbatches if self.config.pipeline_parallel_size > 1 else 1
        return float(self.dp_size * pipeline)

    def train_step(self, batches, documents_as: str, norm: StepNorm):
        xm = self.stack.xm
        batches = self._padded(batches, documents_as)
        if self.config.pipeline_parallel_size > 1:
            scale = self.gradient_average
            weighted = [nb.with_loss_weights(b, scale / max(norm.tokens, 1.0), scale / max(norm.documents, 1.0))
                        for b in batches]
            # run_train returns the DP-averaged mean of its micro-batch losses (broadcast_and_average_loss): the
            # global step objective on every rank; this rank's share is 1/dp of it. The pipeline returns no separate
            # parts: without reranking the objective is the CE; with it, CE and reranking sums are unknown (NaN: the
            # loop then logs train/loss only)
            share = self.nxd_model.run_train(**nb.concatenate(weighted)) / self.dp_size
            reranking = self.config.enable_reranking and documents_as == "memory"
            unknown = torch.full_like(share, float("nan"))
            sums = torch.stack([share, unknown if reranking else share * norm.tokens,
                                unknown if reranking else torch.zeros_like(share)]).float()
        else:
            sums = torch.zeros(3, device=self.device)
            for batch in self.stack.loader.MpDeviceLoader(batches, self.device):
                out = self.nxd_model(batch, documents_as=documents_as)
                objective = norm.objective(out)
                (objective * self.gradient_average).backward()
                rerank = out.rerank_sum if out.rerank_sum is not None else torch.zeros_like(out.ce_sum)
                sums = sums + torch.stack([objective.detach(), out.ce_sum.detach(), rerank.detach()]).float()
        self._reduce_kv_replica_grads()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._set_schedule_step(self._schedule_step + 1)
        xm.add_step_closure(self._read_step, args=(sums, self.optimizer.grad_norm))
        xm.mark_step()   # runs the step's graph, then the closure reads its results
        return self._read["sums"], self._read["grad_norm"]

    def _read_step(self, sums: torch.Tensor, grad_norm: Optional[torch.Tensor]) -> None:
        self._read = {"sums": sums.detach().cpu().double(),
                      "grad_norm": None if grad_norm is None else float(grad_norm.detach().cpu().reshape(-1)[0])}

    def _reduce_kv_replica_grads(self) -> None:
        """KV heads copied over tensor-parallel ranks (kv_replication > 1) are one weight: sum their gradients over
        the ranks holding the same heads, one replica-group all-reduce per replication factor (the compressor and
        the generator may differ). The gradient is where NxD leaves it: param.grad, or main_grad when ZeRO-1's
        accumulation hook (bf16: use_fp32_grad_acc) moved it there and set param.grad = None."""
        by_factor: dict[int, list[torch.Tensor]] = {}
        for path, factor in self._kv_shared.items():
            for param in self._model.get_submodule(path).parameters():
                grad = param.grad if param.grad is not None else getattr(param, "main_grad", None)
                if grad is not None and param.requires_grad:
                    by_factor.setdefault(factor, []).append(grad)
        for factor, grads in sorted(by_factor.items()):
            self.stack.xm.all_reduce(self.stack.xm.REDUCE_SUM, grads, groups=self._kv_groups[factor])

    def forward_backward(self, batch, documents_as: str, norm: StepNorm) -> ScaleDownOutput:
        raise NotImplementedError("the NxD backend runs whole steps (train_step)")

    def optimizer_step(self) -> Optional[float]:
        raise NotImplementedError("the NxD backend runs whole steps (train_step)")

    # ---- evaluation ----------------------------------------------------------------------------------------
    def eval_forward(self, batch, documents_as: str) -> ScaleDownOutput:
        cpu = {k: v.cpu() for k, v in batch.items()}
        padded = self._padded([cpu], documents_as, evaluation=True)[0]
        if self.config.pipeline_parallel_size == 1:
            return self.nxd_model(self.to_device(padded), documents_as=documents_as)
        # the traced pipeline returns only the mean of its micro-batch losses: every micro-batch is the whole batch,
        # so that mean is the batch's; weights (1/T, 0) give its CE, (0, 1/S) its reranking term times lambda
        rows = padded["input_ids"].shape[0]
        index = torch.arange(rows * self.num_microbatches) % rows
        tokens, scored = loss_counts(padded)
        repeated = {k: v[index] for k, v in padded.items()}
        inputs = lambda ce_w, rr_w: nb.concatenate([nb.with_loss_weights(repeated, ce_w, rr_w)])  # noqa: E731
        ce = self.nxd_model.run_eval(**inputs(1.0 / max(tokens, 1), 0.0))
        rerank, weight = None, self.config.reranking_loss_weight
        if self.config.enable_reranking and documents_as == "memory" and weight:
            rerank = self.nxd_model.run_eval(**inputs(0.0, 1.0 / max(scored, 1))) / weight
        num_tokens, num_scored = torch.tensor(tokens), torch.tensor(scored)
        return ScaleDownOutput(loss=ce if rerank is None else ce + weight * rerank, ce_loss=ce, rerank_loss=rerank,
                               num_tokens=num_tokens, ce_sum=ce * num_tokens,
                               rerank_sum=None if rerank is None else rerank * num_scored, num_scored=num_scored)

    def generate(self, batch, documents_as: str) -> Optional[list[str]]:
        if self.config.pipeline_parallel_size > 1:
            return None   # no stage holds the whole model
        # the lm_head is vocabulary-parallel (gather_output=False): each rank's logits cover its slice of the
        # vocabulary, so greedy decoding would pick another token on every rank (and stop at another step: a
        # hang). While generating, the logits are all-gathered over the TP group (NxD mappings.py).
        gather = importlib.import_module("neuronx_distributed.parallel_layers.mappings")
        gather = gather.gather_from_tensor_model_parallel_region
        hooks = [self._model.get_submodule(path).register_forward_hook(lambda m, i, out: gather(out))
                 for path, spec in self.plan.modules.items() if spec.loss == "parallel_cross_entropy"]
        try:
            return self._model.generate_from_batch(batch, documents_as, **self.generation_kwargs())
        finally:
            for hook in hooks:
                hook.remove()

    # ---- host-side collectives ------------------------------------------------------------------------------
    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over data-parallel ranks: every tp x pp copy of a DP rank reports the same values, so the world
        sum is divided by tp x pp (one gloo collective over all ranks, which also serves the SIGTERM flag)."""
        out = values.detach().cpu().clone()
        dist.all_reduce(out, group=self.host_group)
        return out / (self.grid.tp * self.grid.pp)

    def barrier(self) -> None:
        dist.barrier(group=self.host_group)

    def peak_flops(self) -> Optional[float]:
        return neuroncore_peak_flops()

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        path = os.path.join(root, tag)
        if self.rank == 0:
            ckpt.clear_incomplete(path)   # left by a run killed while saving
        self.barrier()
        state = {**client_state, BACKEND_STATE: {"schedule_step": self._schedule_step,
                                                 "tp": self.grid.tp, "pp": self.grid.pp, "dp": self.dp_size,
                                                 "zero1": self.config.zero1}}
        keep = self.config.save_total_limit or None
        self.stack.nxd.save_checkpoint(root, tag, model=self.nxd_model, optimizer=self.optimizer,
                                       user_content=state, use_xser=True, num_kept_ckpts=keep)
        return path

    def checkpoint_files(self, path: str) -> list[str]:
        """This rank's model and optimizer shards (with their xser tensor files) and the loop's client state."""
        ps = self.stack.parallel_state
        tag_dir = nxd_files.find_tag(path)
        tp, pp = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
        files = [os.path.join(tag_dir, "model", nxd_files.shard_name(tp, pp))]
        if os.path.isdir(os.path.join(tag_dir, "optim")):
            dp = self.dp_rank if self.config.zero1 else 0
            files.append(os.path.join(tag_dir, "optim", nxd_files.shard_name(tp, pp, dp)))
        for file in list(files):
            if nxd_files.is_xser(file):
                folder = file + ".tensors"
                files += [os.path.join(folder, n) for n in sorted(os.listdir(folder))] + [file + ".info.pt"]
        user = os.path.join(tag_dir, "user_content.pt")
        return files + ([user] if os.path.exists(user) else [])

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        return self._load(path, optimizer=True)

    def _load(self, path: str, optimizer: bool) -> dict[str, Any]:
        tag_dir = nxd_files.find_tag(path)
        saved_optimizer = os.path.isdir(os.path.join(tag_dir, "optim"))
        if optimizer and saved_optimizer:
            nxd_files.check_optimizer_layout(tag_dir, self.dp_size if self.config.zero1 else None)
        root, tag = os.path.split(os.path.normpath(tag_dir))
        try:
            content = self.stack.nxd.load_checkpoint(root, tag=tag, model=self.nxd_model,
                                                     optimizer=self.optimizer if optimizer and saved_optimizer else None,
                                                     strict=True)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{tag_dir} does not fit this run ({exc}). NxD checkpoints must match the model and "
                                  f"--tensor_parallel_size / --pipeline_parallel_size (and the data-parallel size "
                                  f"under ZeRO-1); convert with `scaledown convert --from nxd --to nxd --tp T --pp P`.")
        state = dict(content or {})
        backend = state.get(BACKEND_STATE, {})
        if optimizer:
            step = backend.get("schedule_step")
            if step is None and ckpt.is_complete(tag_dir):
                step = int(ckpt.read_state(tag_dir).get("step", 0))   # converted tag: schedule from the step
            self._set_schedule_step(int(step or 0))
        return state

    def export_pretrained(self, directory: str) -> None:
        """Full weights gathered on the logging rank (dp rank 0 shards, unsharded by the plan), saved there."""
        ps = self.stack.parallel_state
        mine = None
        if self.dp_rank == 0:
            local = self.nxd_model.state_dict()
            mine = ((ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()),
                    {k: v.detach().cpu() for k, v in local.items()})
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(mine, gathered, dst=self.grid.loss_rank(), group=self.host_group)
        if self.is_main:
            shards = dict(item for item in gathered if item is not None)
            full, _ = self.plan.full_state_dict(shards)
            plain = self._skeleton()
            aliases = tied_aliases(plain)   # a tied head is written once and tied again after assign=True
            plain.load_state_dict({k: v.float() for k, v in drop_aliases(full, aliases).items()}, strict=False,
                                  assign=True)
            retie(plain, aliases)
            plain.generator_base_modified = self._model.generator_base_modified
            plain.save_pretrained(directory)
        self.barrier()


def _init_on_host(module: torch.nn.Module, device: torch.device) -> None:
    """param_init_fn for meta-device builds (NxD reinit_model calls it per module after replacing the parameters
    only): zero placeholders for the parameters, overwritten by the checkpoint that follows, and the module's
    buffers still on the meta device computed for real (neuron/parallelize.materialise_buffers: rotary inv_freq
    is not in any checkpoint; NxD would otherwise fail moving it to the device)."""
    for param in module.parameters(recurse=False):
        param.data.zero_()
    materialise_buffers(module, device)
