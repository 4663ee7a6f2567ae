# DeepSpeed backend (ZeRO-1/2/3, optional CPU offload): the GPU-cluster path behind the same training loop.
"""How the pieces fit:

* Model: the ScaleDownModel itself is the engine's module, so checkpoint parameter names are
  `ScaleDownModel.named_parameters()`. Under ZeRO-3 pretrained models (hub names, local folders) are
  built through the Transformers DeepSpeed integration (HfDeepSpeedConfig kept alive: weights load
  straight into partitions); the tiny random sentinels are built whole, seeded exactly as on every
  other backend, then partitioned. Frozen base weights are partitioned like the trainable ones.
* Phases: each phase (generator warm-up, compression fine-tuning) trains a different parameter set,
  so `prepare` destroys the previous engine and builds a new one over the new trainable set, as the
  one-process backend builds a new AdamW. One engine with requires_grad toggling would leave ZeRO's
  flat fp32 groups and Adam state of the other phase's weights in the optimizer.
* Batches: the loop feeds each rank its share (sampler.py) as `accumulation` micro-batches; the
  DeepSpeed config carries the same triple (ds_config.py), so the engine's accumulation boundary is
  the loop's optimizer step. The learning rate follows the loop's schedule, set per step.
* Checkpoints: DeepSpeed's native sharded files in OUTPUT_DIR/checkpoints/step_N (one tag, every
  rank, save_latest=False); the loop writes trainer_state.json and `latest` after all ranks finished.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Callable, Optional, Union

import torch
import torch.distributed as dist
from transformers.integrations import HfDeepSpeedConfig

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint.deepspeed_engine import is_universal, load_universal_checkpoint
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError, ConfigError
from scaledown.models.loading import model_config
from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput
from scaledown.models.serialization import save_pretrained
from scaledown.models.sharded_weights import install_gatherer
from scaledown.training.backends.base import Backend, StepNorm, detached
from scaledown.training.backends.deepspeed.checkpoint_io import check_deepspeed_checkpoint, use_safe_loading
from scaledown.training.backends.deepspeed.ds_config import (check_checkpointing_support, offload_device,
                                                             resolve_ds_config, zero_stage)
from scaledown.training.backends.deepspeed.gather import (free_bytes, full_bytes, gathered, gathered_state_dict,
                                                          is_partitioned, partition_report, resident)
from scaledown.training.backends.distributed_env import init_distributed
from scaledown.training.backends.local import float32_trainable
from scaledown.training.batching import plan_batches
from scaledown.training.throughput import cuda_peak_flops, peak_memory_gb

PARTITION_REPORT = "zero_partitions.json"
# ZeRO-3 generation gathers the whole generator once per batch when it takes at most this share of the free memory
# (the rest: KV cache, activations, the compressor's own per-layer gathers)
GENERATION_GATHER_SHARE = 0.5
BACKEND_STATE = "scaledown_backend"   # our own key in DeepSpeed's client state


class DeepSpeedBackend(Backend):
    name = "deepspeed"

    def __init__(self, config: ScaleDownConfig, ds_config: Union[str, dict], timeout_s: float = 1800.0):
        from deepspeed.accelerator import get_accelerator

        self.config = config
        _quiet_known_noise()
        self.launcher = init_distributed(timeout_s)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.dp_rank, self.dp_size = self.rank, self.world_size
        accelerator = get_accelerator()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(accelerator.device_name(local_rank))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.plan = plan_batches(config.batch_size, config.micro_batch_size, self.dp_size)
        self.ds_config = resolve_ds_config(ds_config, config, self.plan, hidden_size=_hidden_size(config),
                                           on_gpu=self.device.type == "cuda",
                                           bf16_supported=accelerator.is_bf16_supported())
        self.stage = zero_stage(self.ds_config)
        import deepspeed
        check_checkpointing_support(deepspeed.__version__, self.stage, config.gradient_checkpointing)
        self.param_dtype = (torch.bfloat16 if self.ds_config["bf16"]["enabled"] else
                            torch.float16 if self.ds_config["fp16"]["enabled"] else torch.float32)
        self._previous_gatherer = install_gatherer(gathered if self.stage == 3 else None)
        self._hf_ds_config = None
        self._model: Optional[ScaleDownModel] = None
        self.engine = None
        self._base_lrs: list[float] = []
        self._lr_lambda: Callable[[int], float] = lambda step: 1.0
        self._schedule_step = 0
        self._gather_generator: Optional[bool] = None   # decided at the first ZeRO-3 generation

    # ---- model -----------------------------------------------------------------------------------
    @property
    def model(self) -> ScaleDownModel:
        return self._model

    def build_model(self, build: Callable[[], ScaleDownModel]) -> ScaleDownModel:
        if self.stage != 3:
            return build()
        import deepspeed
        if not self.config.base_is_random:  # transformers partitions hub/folder models while it loads them
            self._keep_hf_ds_config()
        model = build()
        for p in model.parameters():  # what is still whole (LoRA, memory tokens, the tiny model) joins in
            if not is_partitioned(p) and p.is_floating_point():
                p.data = p.data.to(self.param_dtype)
        deepspeed.zero.Init(module=model, config_dict_or_path=self.ds_config)
        self._keep_hf_ds_config()
        return model

    def _keep_hf_ds_config(self) -> None:
        """transformers consults this (weakly referenced) object for ZeRO-3 loading, init and generation."""
        if self._hf_ds_config is None:
            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)

    def setup(self, model: ScaleDownModel) -> None:
        self._model = model
        if self.stage != 3:
            model.to(self.device)
            return
        # ZeRO-3 placed the parameters; buffers (rotary frequencies) built outside zero.Init follow them
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.device != self.device:
                    module._buffers[name] = buffer.to(self.device)

    def prepare(self, param_groups, lr_lambda, accumulation: int) -> None:
        import deepspeed
        if accumulation != self.plan.accumulation:
            raise RuntimeError(f"the loop accumulates {accumulation} micro-batches but the DeepSpeed config was "
                               f"written for {self.plan.describe()}")
        groups = [g for g in param_groups if g["params"]]
        self._destroy_engine()
        if self.param_dtype == torch.float32 and self.stage != 3:
            # no bf16/fp16 section: DeepSpeed steps the weights themselves (no fp32 master copy), so a bf16-saved
            # base the warm-up trains must be float32 first (with bf16 on, the engine keeps fp32 masters itself;
            # ZeRO-3 built every weight in param_dtype already)
            float32_trainable(groups)
        optimizer = self._optimizer(groups)
        self.engine, _, _, _ = deepspeed.initialize(model=self._model, optimizer=optimizer, config=self.ds_config,
                                                    dist_init_required=False)
        self._base_lrs = [g["lr"] for g in groups]
        self._lr_lambda = lr_lambda
        self._set_schedule_step(0)

    def _optimizer(self, groups: list[dict[str, Any]]):
        cfg = self.config
        kwargs = dict(lr=groups[0]["lr"], betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                      weight_decay=cfg.weight_decay)
        if offload_device(self.ds_config, "optimizer") != "none":  # ZeRO-Offload steps on the CPU
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
        return torch.optim.AdamW(groups, **kwargs)

    def _destroy_engine(self) -> None:
        if self.engine is not None:
            self.engine.destroy()  # removes ZeRO-3 hooks so the next phase's engine can install its own
            self.engine = None

    # ---- steps -----------------------------------------------------------------------------------
    def to_device(self, batch):
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def forward_backward(self, batch, documents_as: str, norm: StepNorm) -> ScaleDownOutput:
        out = self.engine(batch, documents_as=documents_as)
        # the global counts already normalise: no division by the accumulation steps (scale_wrt_gas=False), and
        # * dp_size cancels the mean DeepSpeed takes when it reduces gradients over the data-parallel ranks
        self.engine.backward(norm.objective(out) * self.gradient_average, scale_wrt_gas=False)
        if not self.engine.is_gradient_accumulation_boundary():
            self.engine.step()  # DeepSpeed counts every micro-step; the boundary one is optimizer_step
        return detached(out)

    def optimizer_step(self):
        if not self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError("optimizer_step called off DeepSpeed's accumulation boundary: the loop and the "
                               "config disagree on micro-batches per step")
        self.engine.step()  # clips to gradient_clipping, steps, zeroes gradients
        self._set_schedule_step(self._schedule_step + 1)
        return self.engine.get_global_grad_norm()   # a float or a device tensor, read when the loop logs

    def _set_schedule_step(self, step: int) -> None:
        self._schedule_step = step
        for group, base in zip(self.engine.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * self._lr_lambda(step)

    def learning_rates(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.engine.optimizer.param_groups)}

    # ---- collectives -----------------------------------------------------------------------------
    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over ranks. The loop's counts and flags are host tensors: they go over a gloo group, so the host
        never waits for the GPU's queue (an NCCL reduction would need a device copy and a read back each step)."""
        if self.world_size == 1:
            return values
        if values.device.type == "cpu":
            dist.all_reduce(values, group=self._host_group())
            return values
        dist.all_reduce(values)
        return values

    def _host_group(self):
        """A gloo group over all ranks for host tensors (the default group is NCCL on GPUs)."""
        if self.device.type == "cpu":
            return None   # the default group is gloo already
        if getattr(self, "_gloo", None) is None:
            self._gloo = dist.new_group(backend="gloo")   # a collective: every rank reaches it at the same call
        return self._gloo

    def barrier(self) -> None:
        dist.barrier()

    def generate(self, batch: dict[str, torch.Tensor], documents_as: str) -> Optional[list[str]]:
        """Greedy answers; under ZeRO-3 the generator is gathered once per batch when it fits (else per layer
        and token, as the engine's hooks do)."""
        if self.stage != 3:
            return super().generate(batch, documents_as)
        params = list(self._model.generator.parameters())
        if self._gather_generator is None:
            self._gather_generator = self._generator_fits(params)
        if not self._gather_generator:
            return super().generate(batch, documents_as)
        with resident(params):
            return super().generate(batch, documents_as)

    def _generator_fits(self, params: list[torch.nn.Parameter]) -> bool:
        """Whether every rank can hold the whole generator in GENERATION_GATHER_SHARE of its free memory."""
        need, free = full_bytes(params), free_bytes(self.device)
        fits = torch.tensor([1.0 if need <= GENERATION_GATHER_SHARE * free else 0.0], device=self.device)
        dist.all_reduce(fits, op=dist.ReduceOp.MIN)   # one rank short of memory: nobody gathers (a collective)
        decision = bool(fits.item() > 0)
        if self.is_main:
            how = ("gathered once per batch" if decision else
                   "gathered layer by layer for every token (it does not fit)")
            print(f"ZeRO-3 generation: the generator ({need / 2**30:.2f} GiB whole) is {how}; rank 0 has "
                  f"{free / 2**30:.1f} GiB free, the limit is {GENERATION_GATHER_SHARE:.0%} of it", flush=True)
        return decision

    def generation_kwargs(self) -> dict[str, Any]:
        # ZeRO-3 gathers weights collectively in every forward: ranks keep stepping until all are done
        return {"synced_gpus": True} if self.stage == 3 and self.world_size > 1 else {}

    def memory_gb(self) -> Optional[float]:
        return peak_memory_gb(self.device)

    def peak_flops(self) -> Optional[float]:
        return cuda_peak_flops(self.param_dtype) if self.device.type == "cuda" else None

    # ---- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        path = os.path.join(root, tag)
        if self.is_main:
            os.makedirs(root, exist_ok=True)
            ckpt.clear_incomplete(path)  # left by a run killed while saving
        self.barrier()
        state = {**client_state, BACKEND_STATE: {"schedule_step": self._schedule_step, "zero_stage": self.stage,
                                                 "dp_size": self.dp_size}}
        self.engine.save_checkpoint(root, tag=tag, client_state=state, save_latest=False)
        self._write_partition_report(path)
        return path

    def _write_partition_report(self, path: str) -> None:
        reports = [None] * self.world_size
        dist.all_gather_object(reports, partition_report(self._model))
        if self.is_main:
            with open(os.path.join(path, PARTITION_REPORT), "w") as f:
                json.dump({"zero_stage": self.stage, "ranks": reports}, f)

    def checkpoint_files(self, path: str) -> list[str]:
        if is_universal(path):   # every rank reads every parameter's files
            return sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(path, "zero"))
                          for name in names if name.endswith(".pt"))
        model = (f"zero_pp_rank_{self.dp_rank}_mp_rank_00_model_states.pt" if self.stage == 3
                 else "mp_rank_00_model_states.pt")
        optim = [n for n in sorted(os.listdir(path)) if n.endswith(f"zero_pp_rank_{self.dp_rank}_mp_rank_00_optim_states.pt")]
        if self.stage > 0 and not optim:
            optim = [f"zero_pp_rank_{self.dp_rank}_mp_rank_00_optim_states.pt"]   # reported as missing
        return [os.path.join(path, name) for name in [model, *optim]]

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        if is_universal(path):  # written by `scaledown convert --to deepspeed`: any world size starts from it
            client = load_universal_checkpoint(self.engine, path)
            self._set_schedule_step(int(client.get("optimizer_step", 0)))
            return client
        check_deepspeed_checkpoint(path, self.dp_rank, self.dp_size, self.stage)
        root, tag = os.path.split(os.path.normpath(path))
        with use_safe_loading(self.engine):
            loaded, client = self.engine.load_checkpoint(root, tag=tag, load_optimizer_states=True,
                                                         load_lr_scheduler_states=False)
        if loaded is None:
            raise CheckpointError(f"DeepSpeed found no checkpoint in {path}.")
        self._set_schedule_step(int(client.get(BACKEND_STATE, {}).get("schedule_step", 0)))
        return client

    def export_pretrained(self, directory: str) -> None:
        """The Hugging Face folder, gathered one module at a time and written by rank 0."""
        if self.stage != 3:
            if self.is_main:
                self._model.save_pretrained(directory)
            self.barrier()
            return
        state = gathered_state_dict(self._model, keep=self.is_main)
        if self.is_main:
            compressor = {k[len("compressor."):]: v for k, v in state.items() if k.startswith("compressor.")}
            generator = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
            save_pretrained(self._model, directory, state_dict=compressor, generator_state_dict=generator)
        self.barrier()

    def close(self) -> None:
        self._destroy_engine()
        install_gatherer(self._previous_gatherer)
        if dist.is_initialized():
            dist.barrier()  # nobody tears down the group while another rank still writes
            dist.destroy_process_group()


def _quiet_known_noise() -> None:
    """Drop two messages that would alarm users for nothing (the loss matches the one-process run exactly)."""
    warnings.filterwarnings("ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
                            category=FutureWarning)

    class _RootOutputNote(logging.Filter):
        # ZeRO-3 cannot see tensors inside ScaleDownOutput, the root module's return value; the root owns no
        # parameters, and every submodule that does returns plain tensors, so its hooks fire as they should.
        def filter(self, record: logging.LogRecord) -> bool:
            return "unknown inputs or outputs type" not in record.getMessage()

    from deepspeed.utils import logger
    logger.addFilter(_RootOutputNote())


def _hidden_size(config: ScaleDownConfig) -> Optional[int]:
    """The generator's width (for "auto" ZeRO bucket sizes), when its config can be read."""
    try:
        return int(model_config(config.generator_model_name, config.trust_remote_code).hidden_size)
    except (ConfigError, AttributeError, OSError, ValueError):
        return None
