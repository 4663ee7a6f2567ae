# Pipeline stages of the torch backend: one ScaleDownModel cut by the plan's stage rule, each rank running its stage.
"""Built by hand (no tracing: torch.distributed.pipelining's `pipeline()` fails when an input, here the attention
mask, is used on both sides of a cut). The stage rule is scaledown/parallel/pipeline.py, read through ParallelPlan:

* `cut_to_stage` keeps this stage's weights and replaces every module the plan puts on another stage with `Absent`:
  no weights, and called it passes its input through, so the transformers forward loops (decoder layers, final norm)
  run only this stage's layers. Parameter names stay the whole model's (DCP checkpoints of any pp load into any pp).
* `StageModule.forward` runs one micro-batch through this stage's part, in the one-process forward's order
  (ScaleDownModel.forward): compressor embeddings and generator token embeddings (stage 0), compressor layers,
  compressor tail (projection, norms, RR head) + memory splice (the stage of the generator's first layer), generator
  layers, norm + head + loss sums (last stage). Masks and positions are recomputed on every stage from the batch.
* Between stages travel tensors only: compressor states and generator token embeddings before the tail's stage,
  generator hidden states and reranking scores after it. PipelineStage keeps the shapes of its first micro-batch for
  the whole run (receive buffers), so each is zero-padded to the run's largest shape (`Boundary`) and sliced back by
  the receiver, which knows the real shape from the micro-batch: the compute is the one-process forward's, unpadded.
  Under --tp they are plain tensors too, whole on every tp rank (the row-parallel and vocabulary-parallel styles
  return local Replicate outputs); only the lm_head's vocabulary-sharded logits are DTensors, and they stay on the
  last stage (its loss and backward run inside loss_parallel()).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from scaledown.models.compressor_builders import decoder_base
from scaledown.models.generator import base_causal_lm, splice_memory
from scaledown.models.scaledown_model import generator_positions
from scaledown.parallel import pipeline as P
from scaledown.training.backends.neuron.batches import longest_compressor_input, longest_prompt

_PASSED_ATTRIBUTES = ("attention_type", "layer_type", "embedding_dim", "num_embeddings", "in_features",
                      "out_features")


class Absent(nn.Module):
    """Stands for a module another pipeline stage owns: no weights; called, it returns its first input unchanged.

    Attributes a forward loop reads from a layer (attention_type) are kept, and each weight has a meta-device stand-in
    of its shape (code that reads a width or counts elements still can; nothing is allocated).
    """

    def __init__(self, original: nn.Module):
        super().__init__()
        for name in _PASSED_ATTRIBUTES:
            value = getattr(original, name, None)
            if isinstance(value, (int, str)):
                setattr(self, name, value)
        for name, param in original.named_parameters(recurse=False):
            object.__setattr__(self, name, torch.empty(param.shape, dtype=param.dtype, device="meta"))
        for name, value in vars(original).items():   # optional parts left out stay None (rr_embedding, reranking off)
            if value is None and not name.startswith("_"):
                object.__setattr__(self, name, None)

    def forward(self, *args, **kwargs):
        if args:
            return args[0]
        for key in ("hidden_states", "inputs_embeds", "input"):
            if kwargs.get(key) is not None:
                return kwargs[key]
        raise RuntimeError("Absent module called without an input to pass through")


@dataclass(frozen=True)
class StageRole:
    """What stage `index` of `count` runs. tail: the stage of the generator's first layer (rule 3 of the stage rule),
    which also runs the compressor's tail and splices the memory into the generator's inputs."""
    index: int
    count: int
    tail: int

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    @property
    def runs_compressor(self) -> bool:
        return self.index <= self.tail

    @property
    def runs_generator(self) -> bool:
        return self.index >= self.tail

    @property
    def receives(self) -> Optional[str]:
        """"compressor" (states + generator token embeddings), "generator" (hidden states + scores) or None."""
        return None if self.first else ("compressor" if self.index <= self.tail else "generator")

    @property
    def sends(self) -> Optional[str]:
        return None if self.last else ("compressor" if self.index + 1 <= self.tail else "generator")


def stage_role(plan, index: int) -> StageRole:
    """This rank's role; the compressor's tail runs on the stage of the generator's first layer (plan.layer_names:
    the compressor backbone's layers, then the generator's)."""
    layer_stage = P.stage_of_layers(plan.layer_names, plan.pp)
    generator_first = next(name for name in plan.layer_names if not name.startswith("compressor."))
    return StageRole(index, plan.pp, layer_stage[generator_first])


def cut_to_stage(model: nn.Module, plan, index: int) -> tuple[list[nn.Module], dict[str, nn.Module]]:
    """Replace, in place, every module whose weights the plan puts on another stage with Absent. Returns this stage's
    decoder layers (the FSDP2 units) and the replaced modules moved to the meta device (structure without memory:
    `whole_structure` puts them back for writing the Hugging Face folder, whose adapter writer walks the modules).
    A module keeps its place when any of its own weights is on this stage."""
    own: list[nn.Module] = []
    removed: dict[str, nn.Module] = {}
    layer_stage = P.stage_of_layers(plan.layer_names, plan.pp)
    owners: dict[str, set[int]] = {}
    for name, param in plan.params.items():
        if not any(name.startswith(layer + ".") for layer in plan.layer_names):
            owners.setdefault(name.rsplit(".", 1)[0], set()).add(param.stage)
    for name in plan.layer_names:
        if layer_stage[name] == index:
            own.append(model.get_submodule(name))
        else:
            removed[name] = model.get_submodule(name)
    removed.update({owner: model.get_submodule(owner) for owner, stages in sorted(owners.items())
                    if index not in stages})
    for name, module in removed.items():
        model.set_submodule(name, Absent(module))
        module.to("meta")
    return own, removed


@contextmanager
def whole_structure(model: nn.Module, removed: dict[str, nn.Module]):
    """The cut model with its removed modules (meta tensors) back in place, restored on exit."""
    absent = {name: model.get_submodule(name) for name in removed}
    for name, module in removed.items():
        model.set_submodule(name, module)
    try:
        yield model
    finally:
        for name, module in absent.items():
            model.set_submodule(name, module)


@dataclass(frozen=True)
class Boundary:
    """The largest tensors that cross a cut in this run: rows of a micro-batch, generator and compressor positions
    (memory / RR positions included), documents per row, widths. Every crossing tensor is zero-padded to these."""
    rows: int
    generator_length: int
    compressor_length: int
    documents: int
    generator_width: int
    compressor_width: int

    def shapes(self, kind: str, reranking: bool) -> list[tuple[int, ...]]:
        if kind == "compressor":
            return [(self.rows * self.documents, self.compressor_length, self.compressor_width),
                    (self.rows, self.generator_length, self.generator_width)]
        shapes = [(self.rows, self.generator_length, self.generator_width)]
        return shapes + [(self.rows, self.documents)] if reranking else shapes

    @staticmethod
    def pack(tensors: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
        out = []
        for tensor, shape in zip(tensors, shapes):
            if any(n > m for n, m in zip(tensor.shape, shape)):
                raise RuntimeError(f"a tensor of shape {tuple(tensor.shape)} crosses a pipeline cut whose largest "
                                   f"shape for this run is {shape}: the boundary rule misses a case")
            pad: list[int] = []
            for n, m in reversed(list(zip(tensor.shape, shape))):
                pad += [0, m - n]
            out.append(F.pad(tensor, pad))
        return tuple(out)

    @staticmethod
    def unpack(tensors: tuple[torch.Tensor, ...], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return [t[tuple(slice(0, n) for n in shape)] for t, shape in zip(tensors, shapes)]


def boundary_for(model: nn.Module, rows: int, documents: int) -> Boundary:
    """The run's largest crossing shapes from the configured lengths (the rule the NxD backend's static shapes use)."""
    cfg = model.config
    inputs = model.inputs
    documents = max(1, documents)
    answer = max(cfg.answer_max_length, cfg.doc_max_length + 1)   # answers, or pretraining chunks + EOS
    generator = max(longest_prompt(inputs, d, "memory") for d in range(1, documents + 1)) + answer
    comp = model.compressor
    return Boundary(rows, generator, longest_compressor_input(inputs) + comp.num_appended, documents,
                    int(decoder_base(base_causal_lm(model.generator)).config.hidden_size),
                    int(comp.backbone.config.hidden_size))


class StageModule(nn.Module):
    """One rank's stage: `forward(*received, mb=index)` runs micro-batch `batches[index]` (set by the runner before
    each schedule step) through this stage. The last stage returns [ce_sum, rerank_sum, answer tokens, scored
    documents, correct tokens] (float32, (5,)): the sums behind ScaleDownModel.forward's means."""

    def __init__(self, model: nn.Module, role: StageRole, boundary: Boundary):
        super().__init__()
        self.model = model
        self.role = role
        self.boundary = boundary
        self.batches: list[dict[str, torch.Tensor]] = []
        self.reranking = bool(model.config.enable_reranking)

    def forward(self, *received: torch.Tensor, mb: Optional[torch.Tensor] = None):
        role, model = self.role, self.model
        index = received[0] if role.first else mb
        batch = self.batches[int(index.reshape(-1)[0])]
        comp = model.compressor
        b, k, t = batch["compressor_input_ids"].shape
        real = model.document_index(batch)
        gen_shape = tuple(batch["input_ids"].shape) + (self.boundary.generator_width,)
        comp_shape = (int(real.numel()), t + comp.num_appended, self.boundary.compressor_width)
        if role.first:
            states = comp.embed_inputs(batch["compressor_input_ids"].view(b * k, t)[real])
            embeds = model.generator.get_input_embeddings()(batch["input_ids"])
        elif role.receives == "compressor":
            states, embeds = Boundary.unpack(received, [comp_shape, gen_shape])
        else:
            parts = Boundary.unpack(received, [gen_shape, (b, k)])
            hidden, scores = parts[0], (parts[1] if self.reranking else None)
        if role.runs_compressor:
            mask, positions = comp.backbone_inputs(batch["compressor_attention_mask"].view(b * k, t)[real])
            states = comp.backbone(inputs_embeds=states, attention_mask=mask, position_ids=positions).last_hidden_state
            if role.index < role.tail:
                return Boundary.pack([states, embeds], self.boundary.shapes("compressor", self.reranking))
            memory, scores = model.place_documents(*comp.read_memory(states), real, b, k)
            hidden = splice_memory(embeds, memory, batch["memory_slots"])
        mask = batch["attention_mask"]
        hidden = decoder_base(base_causal_lm(model.generator))(
            inputs_embeds=hidden, attention_mask=mask, position_ids=generator_positions(mask),
            use_cache=False).last_hidden_state
        if not role.last:
            sent = [hidden] + ([scores] if self.reranking else [])
            return Boundary.pack(sent, self.boundary.shapes("generator", self.reranking))
        out = model.loss_from_hidden(batch, hidden, scores)
        zero = out.ce_sum.new_zeros(())
        parts = [out.ce_sum, out.rerank_sum, out.num_tokens, out.num_scored, out.num_correct]
        return torch.stack([zero if p is None else p.to(zero.dtype) for p in parts])
