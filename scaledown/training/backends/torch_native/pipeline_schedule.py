# Pipeline parallelism of the torch backend: stages on the mesh's "pp" dim, 1F1B / GPipe steps, evaluation, export.
"""One optimizer step = one schedule step whose pipeline micro-batches are the loop's micro-batches (gradient
accumulation). Loss weighting (training/backends/base.py, StepNorm): the last stage's loss of micro-batch i is
(ce_sum_i / T + lambda * rerank_sum_i / S) x gradient_average, T and S the GLOBAL batch's counts, with
`scale_grads=False`: the schedule neither averages nor rescales, so the accumulated gradient is the global
objective's whatever the answer lengths of the micro-batches (FSDP2's average over data-parallel ranks is what
gradient_average cancels, as without pipelining).

torch.distributed.pipelining (torch 2.13): PipelineStage (dynamic shape inference on the first micro-batch), with
Schedule1F1B or ScheduleGPipe. Stage 0 gets the micro-batch index as its positional input, every stage the same
index as the keyword `mb` (the schedule chunks it), and reads the micro-batch from StageModule.batches: micro-batches
of a step may differ in length, which one chunked tensor could not hold. Interleaved schedules (several virtual stages
per rank) are not offered: the plan's stage rule (parallel/pipeline.py) gives each rank one contiguous stage, as the
NxD backend and the converters read it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from scaledown.checkpoint.description import ModelDescription
from scaledown.config import ScaleDownConfig
from scaledown.errors import ConfigError
from scaledown.parallel import ParallelPlan
from scaledown.training.backends.base import StepNorm
from scaledown.training.backends.torch_native.pipeline_stages import (StageModule, boundary_for, cut_to_stage,
                                                                      stage_role, whole_structure)
from scaledown.training.backends.torch_native.tensor_parallel import loss_context_for

GROUP_ORDER = ("generator", "compressor")   # ScaleDownModel.parameter_groups' order
_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.bool]


def check_pipeline_config(config: ScaleDownConfig) -> None:
    """What the stage rule and this path cannot run, refused by flag before any process group or model: a tied
    lm_head, more stages than decoder layers (ParallelPlan on a meta skeleton), the generator warm-up."""
    pp = config.pipeline_parallel_size
    check_plan(ModelDescription.from_config(config).skeleton(), pp)
    if config.generator_warmup_ratio > 0:
        raise ConfigError(f"generator_warmup_ratio {config.generator_warmup_ratio} with --pp {pp}: the warm-up reads "
                          f"documents as text and then recopies generator layers into the compressor, which live on "
                          f"other pipeline stages. Pass --generator_warmup_ratio 0 (the tiny preset warms up by "
                          f"default), or warm up with --pp 1, then continue with --init_from.")


def check_pipeline_batches(config: ScaleDownConfig, pp: int, accumulation: int) -> None:
    """The step's micro-batches against the schedule (after the data-parallel size is known)."""
    if config.num_microbatches is not None and config.num_microbatches != accumulation:
        raise ConfigError(f"--num_microbatches {config.num_microbatches}: under --backend torch the pipeline "
                          f"micro-batches are the step's micro-batches ({accumulation} = batch_size / "
                          f"micro_batch_size / data-parallel ranks). Leave --num_microbatches unset, or change "
                          f"--micro_batch_size.")
    if config.pipeline_schedule == "1f1b" and accumulation < pp:
        raise ConfigError(f"--pipeline_schedule 1f1b needs at least {pp} micro-batches per step (one per stage), but "
                          f"batch_size {config.batch_size} / micro_batch_size / data-parallel ranks gives "
                          f"{accumulation}. Use a smaller --micro_batch_size or a larger --batch_size, or "
                          f"--pipeline_schedule gpipe.")


def check_plan(model, pp: int):
    """ParallelPlan.for_model: tied lm_head and more stages than decoder layers are refused by name."""
    return ParallelPlan.for_model(model, tp=1, pp=pp)


class PipelineParallel:
    """This rank's stage of the model, its schedule, and the collectives over the "pp" mesh dimension."""

    def __init__(self, config: ScaleDownConfig, mesh, device: torch.device):
        self.config, self.device = config, device
        self.loss_context = loss_context_for(config.tensor_parallel_size)   # around each step's schedule
        self.group = mesh["pp"].get_group()
        self.index = mesh.get_local_rank("pp")
        self.count = mesh.size(mesh.mesh_dim_names.index("pp"))
        self.module: Optional[StageModule] = None
        self.schedule = None
        self.scale = 1.0
        self.norm: Optional[StepNorm] = None
        self.parts: dict[int, torch.Tensor] = {}
        self.removed: dict[str, torch.nn.Module] = {}

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    # ---- building --------------------------------------------------------------------------------------------
    def cut(self, model, micro_batch: int) -> tuple[StageModule, list[torch.nn.Module]]:
        """Cut `model` (in place) to this rank's stage; returns the stage module and its decoder layers."""
        plan = check_plan(model, self.count)
        role = stage_role(plan, self.index)
        documents = max(self.config.num_documents_train, self.config.num_documents_eval or 0)
        boundary = boundary_for(model, micro_batch, documents)
        layers, self.removed = cut_to_stage(model, plan, self.index)
        self.module = StageModule(model, role, boundary)
        return self.module, layers

    def uniform_groups(self, groups: list[dict]) -> list[dict]:
        """This stage's optimizer groups plus, empty, those only other stages have, in ScaleDownModel's group order:
        every rank then has the same groups (the schedule's state in a checkpoint is rank 0's; rates log by name)."""
        everywhere: list = [None] * self.count
        dist.all_gather_object(everywhere, [(g["name"], g["lr"]) for g in groups], group=self.group)
        found = dict(pair for stage in everywhere for pair in stage)
        order = sorted(found, key=lambda n: (GROUP_ORDER.index(n) if n in GROUP_ORDER else len(GROUP_ORDER), n))
        mine = {g["name"]: g for g in groups}
        return [mine.get(name, {"name": name, "lr": found[name], "params": []}) for name in order]

    def build_schedule(self, micro_batches: int) -> None:
        if self.schedule is not None and self.schedule._n_microbatches == micro_batches:
            return
        stage = PipelineStage(self.module, self.index, self.count, self.device, group=self.group)
        kind = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}[self.config.pipeline_schedule]
        self.schedule = kind(stage, micro_batches, loss_fn=self._loss, scale_grads=False)

    # ---- training --------------------------------------------------------------------------------------------
    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The micro-batch's share of the step objective (StepNorm.objective) x the backend's gradient average."""
        self.parts[int(target.reshape(-1)[0])] = output.detach()
        norm = self.norm
        share = output[0] / max(norm.tokens, 1.0) + norm.rerank_weight * output[1] / max(norm.documents, 1.0)
        return share * self.scale

    def train_step(self, batches: list[dict[str, torch.Tensor]], norm: StepNorm, scale: float) -> torch.Tensor:
        """Forward and backward of the step's micro-batches; returns [objective share, ce_sum, rerank_sum] (float64)
        on every stage (sent from the last)."""
        self.norm, self.scale, self.parts = norm, scale, {}
        self.module.batches = batches
        index = torch.arange(len(batches), device=self.device)
        try:
            # the schedule runs the backward too: under TP the vocabulary-parallel loss needs loss_parallel() around it
            with self.loss_context():
                if self.index == 0:
                    self.schedule.step(index, mb=index)
                elif self.last:
                    self.schedule.step(mb=index, target=index, return_outputs=False)
                else:
                    self.schedule.step(mb=index)
        finally:
            self.module.batches = []
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.last:
            for i in range(len(batches)):
                ce, rerank = self.parts[i][0].double(), self.parts[i][1].double()
                share = ce / max(norm.tokens, 1.0) + norm.rerank_weight * rerank / max(norm.documents, 1.0)
                sums = sums + torch.stack([share, ce, rerank])
        return self._from_last(sums)

    # ---- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward_only(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch through the stages, forward only (point-to-point over "pp", any batch shape); returns the last
        stage's [ce_sum, rerank_sum, answer tokens, scored documents, correct tokens] on every stage."""
        self.module.batches = [batch]
        index = torch.zeros(1, dtype=torch.long, device=self.device)
        try:
            with self.loss_context():
                if self.index == 0:
                    out = self.module(index)
                else:
                    out = self.module(*self._recv(self.index - 1), mb=index)
            if not self.last:
                self._send(out, self.index + 1)
        finally:
            self.module.batches = []
        result = out.float() if self.last else torch.zeros(5, device=self.device)
        return self._from_last(result)

    def _peer(self, stage: int) -> int:
        return dist.get_global_rank(self.group, stage)

    def _send(self, tensors: tuple[torch.Tensor, ...], stage: int) -> None:
        header = torch.zeros(len(tensors), 6, dtype=torch.long, device=self.device)
        for row, tensor in zip(header, tensors):
            row[0], row[1] = tensor.dim(), _DTYPES.index(tensor.dtype)
            row[2:2 + tensor.dim()] = torch.tensor(tensor.shape)
        dist.send(torch.tensor([len(tensors)], device=self.device), self._peer(stage), group=self.group)
        dist.send(header, self._peer(stage), group=self.group)
        for tensor in tensors:
            dist.send(tensor.contiguous(), self._peer(stage), group=self.group)

    def _recv(self, stage: int) -> tuple[torch.Tensor, ...]:
        count = torch.zeros(1, dtype=torch.long, device=self.device)
        dist.recv(count, self._peer(stage), group=self.group)
        header = torch.zeros(int(count), 6, dtype=torch.long, device=self.device)
        dist.recv(header, self._peer(stage), group=self.group)
        out = []
        for row in header.tolist():
            tensor = torch.empty(row[2:2 + row[0]], dtype=_DTYPES[row[1]], device=self.device)
            dist.recv(tensor, self._peer(stage), group=self.group)
            out.append(tensor)
        return tuple(out)

    def _from_last(self, values: torch.Tensor) -> torch.Tensor:
        dist.broadcast(values, group=self.group, group_src=self.count - 1)
        return values

    # ---- export ----------------------------------------------------------------------------------------------
    def full_state(self, model, dp_rank: int) -> dict[str, torch.Tensor]:
        """The whole model's full tensors on global rank 0 (each stage's first data-parallel rank sends its stage's);
        the other ranks get {}."""
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        mine = {k: v.detach().cpu() for k, v in state.items()} if dp_rank == 0 else {}
        gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        out: dict[str, torch.Tensor] = {}
        for part in gathered or []:
            out.update(part)
        return out

    def whole_structure(self, model):
        """Context: `model` with the other stages' modules back (meta tensors) while the final folder is written."""
        return whole_structure(model, self.removed)
