#!/usr/bin/env python
# The one-GPU check of issue 15 (bf16 folder generator, one-GPU training, host syncs, ZeRO-3 over NCCL, latency).
"""Run on a CUDA machine (`--device cuda`, the default) or rehearse on CPU (`--device cpu`: smaller model, fewer
steps, gloo instead of NCCL, host syncs emulated by hooking Tensor.item/tolist/__bool__/__float__/__int__).

Each part runs in its own try/except, so one failure keeps the others' figures. Writes OUT/gpu_check.json
(every part: ok, checks, figures, error), OUT/gpu_check.log (this log, with the tails of the subprocess logs)
and OUT/latency.json, and prints a summary table. Needs no install of scaledown: `PYTHONPATH=. python
benchmarks/gpu_check.py --out OUT`. Parts:
  environment  versions, device name, ScaleDown's peak FLOP/s for it (scaledown/training/throughput.py)
  generator    random Mistral-shaped model (8 x 1024, 8 query / 2 KV heads) saved in bf16 as a HF folder
  train        `train.py --generator_model_name FOLDER` (train_main, one process): fp32 optimizer parameters,
               device placement, falling loss, moving compressor weights, tokens/s and MFU vs a hand count
  syncs        host syncs per steady-state training step (torch.cuda.set_sync_debug_mode("warn")), by location
  zero3        1-rank ZeRO-3 (torchrun, launchers/train_gpu.py, ds_configs/zero3.json), gradient checkpointing,
               evaluation with generation, save, `--resume_from auto`, then `--init_compressor_from` a saved run
  latency      `scaledown bench latency` (synchronises around each timed call), figures
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

PARTS = ("environment", "generator", "train", "syncs", "zero3", "latency")
# (hidden, layers, heads, kv heads, intermediate, train steps, sync steps) per device
SHAPES = {"cuda": dict(hidden=1024, layers=8, heads=8, kv_heads=2, intermediate=3584, steps=20, sync_steps=12),
          "cpu": dict(hidden=64, layers=2, heads=8, kv_heads=2, intermediate=128, steps=8, sync_steps=8)}
LOG: list[str] = []


def say(line: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {line}"
    LOG.append(line)
    print(line, flush=True)


class Part:
    """One part's record: checks (name -> bool), figures, error; a failed check or an exception marks it failed."""

    def __init__(self, name: str):
        self.name, self.checks, self.figures, self.error = name, {}, {}, None
        self.seconds = 0.0

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.checks[name] = bool(ok)
        if detail is not None:
            self.figures[f"{name}_detail"] = detail
        say(f"  {self.name}: {'PASS' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail is not None else ""))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return self.error is None and all(self.checks.values()) and bool(self.checks)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checks": self.checks, "figures": self.figures, "error": self.error,
                "seconds": round(self.seconds, 1)}


def run_part(results: dict, name: str, fn: Callable[[Part], None]) -> Part:
    part = Part(name)
    say(f"== {name}")
    start = time.perf_counter()
    try:
        fn(part)
    except BaseException as exc:  # noqa: BLE001 - a part's failure is recorded, the next part still runs
        part.error = "".join(traceback.format_exception(exc))[-6000:]
        say(f"  {name}: ERROR {type(exc).__name__}: {exc}")
        if isinstance(exc, KeyboardInterrupt):
            raise
    part.seconds = time.perf_counter() - start
    results[name] = part.as_dict()
    return part


# ---- 1. environment ---------------------------------------------------------------------------------------
def environment(part: Part, device: str) -> None:
    import importlib.metadata as md
    from scaledown.training import throughput
    versions = {}
    for pkg in ("torch", "transformers", "peft", "deepspeed", "accelerate", "safetensors", "tokenizers", "pydantic"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    part.figures.update(versions=versions, python=sys.version.split()[0], cuda=torch.version.cuda,
                        cuda_available=torch.cuda.is_available())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    part.figures["device_name"] = name
    if device == "cuda":
        part.figures["capability"] = list(torch.cuda.get_device_capability())
        part.figures["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    key = throughput.device_key(name)
    peaks = {d: throughput.peak_flops_for(name, getattr(torch, d)) for d in ("bfloat16", "float16", "float32")}
    part.figures.update(peak_key=key, peak_flops=peaks)
    say(f"  versions {versions}; device {name}; peak key {key}; peaks {peaks}")
    part.check("deepspeed_importable", versions["deepspeed"] is not None and _imports("deepspeed"))
    if device == "cuda":
        part.check("peak_known_for_device", peaks["bfloat16"] is not None, f"{name} -> {key}")
        if "H200" in name.upper() or "H100" in name.upper():
            part.check("hopper_sxm_bf16_peak", peaks["bfloat16"] == 989.4e12, peaks["bfloat16"])
    else:
        part.check("no_peak_off_cuda", throughput.cuda_peak_flops() is None)


def _imports(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception as exc:  # noqa: BLE001
        say(f"  import {module} failed: {exc!r}")
        return False


# ---- 2. generator -----------------------------------------------------------------------------------------
def make_generator(part: Part, folder: str, shape: dict) -> None:
    from transformers import MistralConfig, MistralForCausalLM
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    values = dict(tiny_models.tiny_generator_config_dict(), hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                  num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                  head_dim=shape["hidden"] // shape["heads"], intermediate_size=shape["intermediate"],
                  max_position_embeddings=4096)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**values)).to(torch.bfloat16)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    load_tiny_tokenizer().save_pretrained(folder)
    saved = json.load(open(os.path.join(folder, "config.json")))
    part.figures.update(parameters=sum(p.numel() for p in model.parameters()), folder=folder,
                        config={k: saved.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                          "num_key_value_heads", "intermediate_size", "vocab_size")})
    part.check("saved_in_bf16", saved.get("dtype", saved.get("torch_dtype")) == "bfloat16", saved.get("dtype"))


# ---- hand count of training FLOPs (independent of scaledown/training/throughput.py) ---------------------------
def hand_flops(batch: dict, gen: dict, comp: dict, lora: dict, proj_params: int, memory_tokens: int,
               appended: int) -> float:
    """FLOPs of one training micro-batch from the architectures' dimensions (config values, not parameters).

    A matrix of n weights costs 2n per token forward, 2n for the input gradient, 2n for its own gradient only
    where it trains. Generator: frozen base (4n) + LoRA A/B (6n) on the prompt+answer tokens; LM head (frozen,
    4n) on answer tokens; attention 4·T²·heads·head_dim per layer forward, x3 with backward. Compressor: every
    weight trains (6n) on each real document's tokens + memory tokens; projection (6n) per memory token.
    """
    def layer_matrices(d: dict) -> dict[str, tuple[int, int]]:
        h, q, kv, i = d["hidden"], d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"], d["intermediate"]
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def per_layer(d: dict) -> int:
        return sum(a * b for a, b in layer_matrices(d).values())

    mask = batch["attention_mask"].detach().cpu()
    lengths = mask.sum(-1).double()
    tokens = float(lengths.sum())
    lora_n = gen["layers"] * sum(lora["r"] * (a + b) for name, (a, b) in layer_matrices(gen).items()
                                 if name in lora["targets"])
    flops = (4.0 * gen["layers"] * per_layer(gen) + 6.0 * lora_n) * tokens
    flops += 3 * 4.0 * gen["layers"] * gen["heads"] * gen["head_dim"] * float(lengths.pow(2).sum())
    if "labels" in batch:
        answers = float((batch["labels"].detach().cpu()[:, 1:] != -100).sum())
        flops += 4.0 * gen["vocab"] * gen["hidden"] * answers
    if "compressor_attention_mask" in batch:
        real = batch["document_mask"].detach().cpu().reshape(-1)
        doc = batch["compressor_attention_mask"].detach().cpu().reshape(real.shape[0], -1).sum(-1)[real].double()
        doc = doc + appended
        flops += 6.0 * comp["layers"] * per_layer(comp) * float(doc.sum())
        flops += 3 * 4.0 * comp["layers"] * comp["heads"] * comp["head_dim"] * float(doc.pow(2).sum())
        flops += 6.0 * proj_params * float(real.sum()) * memory_tokens
    return flops


def _dims(config) -> dict:
    heads = int(config.num_attention_heads)
    return dict(hidden=int(config.hidden_size), layers=int(config.num_hidden_layers), heads=heads,
                kv_heads=int(getattr(config, "num_key_value_heads", heads)),
                head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
                intermediate=int(config.intermediate_size), vocab=int(config.vocab_size))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- 3/4. one-process training through train.py's entry point -------------------------------------------------
def recording_backend(device: str, count_flops: bool, on_step: Callable[[int], None] = lambda step: None):
    """LocalBackend that notes each phase's optimizer, the compressor weights at the compression phase's start,
    the time and FLOPs of each optimizer step (count_flops: syncs the device around each step)."""
    from scaledown.training.backends.local import LocalBackend

    class Recording(LocalBackend):
        def __init__(self, config):
            super().__init__(config)
            self.phases: list[dict] = []
            self.steps: list[dict] = []
            self.flops_counter = None

        def prepare(self, param_groups, *args, **kwargs):
            super().prepare(param_groups, *args, **kwargs)
            try:
                self._note_phase()
            except Exception as exc:  # noqa: BLE001 - the check reports it; training goes on
                self.phases.append({"error": repr(exc), "dtypes": {}, "devices": [], "compressor": {}})

        def _note_phase(self):
            groups = self.optimizer.param_groups
            self.phases.append({
                "dtypes": {g.get("name", str(i)): sorted({str(p.dtype) for p in g["params"]})
                           for i, g in enumerate(groups)},
                "devices": sorted({p.device.type for g in groups for p in g["params"]}),
                "compressor": {k: v.detach().clone() for k, v in self._model.compressor.state_dict().items()}})

        def train_step(self, *args, **kwargs):
            on_step(len(self.steps) + 1)
            batches = args[0] if args else kwargs.get("batches")
            record: dict[str, Any] = {}
            if count_flops:
                try:
                    self._count(batches, args, kwargs, record)
                except Exception as exc:  # noqa: BLE001 - the throughput figures say so; training goes on
                    record["count_error"] = repr(exc)
                _sync(device)
            start = time.perf_counter()
            out = super().train_step(*args, **kwargs)
            if count_flops:
                _sync(device)
                record["seconds"] = time.perf_counter() - start
            self.steps.append(record)
            return out

        def _count(self, batches, args, kwargs, record):
            from scaledown.training.throughput import TrainingFlops
            if self.flops_counter is None:
                self.flops_counter = TrainingFlops(self._model)
                self.dims = (_dims(self._generator_config()), _dims(self._model.compressor.backbone.config))
            documents_as = args[1] if len(args) > 1 else kwargs.get("documents_as")
            record["scaledown_flops"] = sum(self.flops_counter.batch_flops(b, documents_as) for b in batches)
            record["hand_flops"] = sum(self._hand(b, documents_as) for b in batches)
            record["tokens"] = sum(_tokens(b, documents_as, self._model) for b in batches)
            record["documents_as"] = documents_as

        def _generator_config(self):
            from scaledown.models.generator import base_causal_lm
            return base_causal_lm(self._model.generator).config

        def _hand(self, batch, documents_as):
            gen, comp = self.dims
            cfg = self._model.config
            comp_model = self._model.compressor
            targets = set(_as_list(cfg.lora_target_modules))
            if targets == {"all-linear"}:   # peft: every linear layer of the decoder (not the LM head)
                targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
            lora = {"r": int(cfg.lora_r), "targets": targets}
            proj = sum(p.numel() for p in comp_model.projection.parameters() if p.dim() >= 2)
            if documents_as != "memory":
                batch = {k: v for k, v in batch.items() if not k.startswith("compressor_")}
            return hand_flops(batch, gen, comp, lora, proj, int(comp_model.num_memory_tokens),
                              int(comp_model.num_appended))

    return Recording


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _tokens(batch: dict, documents_as: str, model) -> float:
    """Real tokens the step processed: generator prompt + answer, plus each real document's compressor tokens."""
    n = float(batch["attention_mask"].detach().cpu().sum())
    if documents_as == "memory" and "compressor_attention_mask" in batch:
        real = batch["document_mask"].detach().cpu().reshape(-1)
        doc = batch["compressor_attention_mask"].detach().cpu().reshape(real.shape[0], -1).sum(-1)[real]
        n += float(doc.sum()) + int(model.compressor.num_appended) * float(real.sum())
    return n


def train_args(folder: str, out: str, device: str, steps: int, logging_steps: int, warmup_ratio: float) -> list[str]:
    batch, micro = (32, 16) if device == "cuda" else (8, 4)
    return ["--preset", "tiny", "--generator_model_name", folder, "--device_type", "gpu" if device == "cuda" else "cpu",
            "--max_steps", str(steps), "--generator_warmup_ratio", str(warmup_ratio), "--warmup_ratio", "0",
            "--batch_size", str(batch), "--micro_batch_size", str(micro), "--num_train_examples", str(batch * steps),
            "--num_eval_examples", "2", "--eval_max_examples", "0", "--eval_steps", "0", "--save_steps", "0",
            "--logging_steps", str(logging_steps), "--no_progress", "--output_dir", out]


def tb_scalars(run_dir: str, tag: str) -> dict[int, float]:
    from scaledown.evaluation.tb_logs import run_scalars
    return run_scalars(os.path.join(run_dir, "runs")).get(tag, {})


def train_one_process(part: Part, folder: str, work: str, device: str, shape: dict, peak: float | None) -> None:
    from scaledown.cli.train import train_main
    steps = shape["steps"]
    backends = []

    def factory(config):
        backends.append(recording_backend(device, count_flops=True)(config))
        return backends[-1]

    out = os.path.join(work, "run_local")
    shutil.rmtree(out, ignore_errors=True)
    args = train_args(folder, out, device, steps, 1, 0.1)
    say("  train.py " + " ".join(args))
    start = time.perf_counter()
    code = train_main(args, backend_factory=factory)
    part.figures["wall_seconds"] = round(time.perf_counter() - start, 1)
    part.check("exit_code_0", code == 0, code)
    backend = backends[0]
    model = backend.model
    part.figures["optimizer_dtypes_per_phase"] = [p["dtypes"] for p in backend.phases]
    fp32 = all(d == ["torch.float32"] for p in backend.phases for d in p["dtypes"].values())
    part.check("optimizer_params_fp32_every_phase",
               bool(backend.phases) and not any("error" in p for p in backend.phases) and fp32,
               [p.get("error") or p["dtypes"] for p in backend.phases])
    want = "cuda" if device == "cuda" else "cpu"
    placed = {p.device.type for p in model.parameters()}
    part.check(f"parameters_on_{want}", placed == {want} and all(p["devices"] == [want] for p in backend.phases),
               sorted(placed))
    frozen = Counter(str(p.dtype) for p in model.parameters() if not p.requires_grad)
    part.figures["frozen_dtypes"] = dict(frozen)
    losses = tb_scalars(out, "train/loss")
    values = [losses[k] for k in sorted(losses)]
    part.figures["losses"] = [round(v, 4) for v in values]
    head, tail = values[:3], values[-3:]
    part.check("loss_falls", len(values) == steps and sum(tail) / 3 < sum(head) / 3,
               f"first 3 mean {sum(head) / 3:.4f} -> last 3 mean {sum(tail) / 3:.4f}")
    start_state = backend.phases[-1]["compressor"]
    moved = {}
    for name, now in model.compressor.state_dict().items():
        if ".layers." in name and now.dim() == 2:
            moved[name] = (now.detach().cpu() != start_state[name].cpu()).float().mean().item()
    part.figures["compressor_matrices_moved_min_fraction"] = min(moved.values()) if moved else None
    part.check("compressor_weights_move", bool(moved) and min(moved.values()) > 0.5,
               f"{len(moved)} matrices, min fraction changed {min(moved.values()) if moved else None}")
    part.check("compressor_fp32", {p.dtype for p in model.compressor.parameters()} == {torch.float32})
    # throughput: steady steps (skip the first 2 of each phase), timed with a device sync around each step
    records = backend.steps
    errors = sorted({r["count_error"] for r in records if "count_error" in r})
    part.check("flops_counted_every_step", not errors, errors or None)
    records = [r for r in records if "count_error" not in r]
    steady = [r for i, r in enumerate(records) if i >= 2 and r["documents_as"] == "memory"
              and records[i - 1]["documents_as"] == "memory" and records[i - 2]["documents_as"] == "memory"]
    secs = sum(r["seconds"] for r in steady)
    hand, ours, tokens = (sum(r[k] for r in steady) for k in ("hand_flops", "scaledown_flops", "tokens"))
    fig = {"steady_steps": len(steady), "seconds": round(secs, 4), "tokens_per_sec": tokens / secs if secs else None,
           "hand_flops_per_step": hand / max(1, len(steady)), "scaledown_flops_per_step": ours / max(1, len(steady)),
           "scaledown_over_hand": ours / hand if hand else None,
           "hand_mfu": (hand / secs / peak) if (peak and secs) else None,
           "scaledown_mfu": (ours / secs / peak) if (peak and secs) else None,
           "peak_flops": peak}
    tb_tps, tb_mfu = tb_scalars(out, "perf/tokens_per_sec"), tb_scalars(out, "perf/mfu")
    later = [k for k in sorted(tb_tps) if k > 4]
    fig["logged_tokens_per_sec_median"] = _median([tb_tps[k] for k in later])
    fig["logged_mfu_median"] = _median([tb_mfu[k] for k in later if k in tb_mfu])
    fig["memory_gb"] = max(tb_scalars(out, "perf/memory_gb").values(), default=None)
    part.figures["throughput"] = fig
    say(f"  throughput {json.dumps(fig)}")
    if fig["scaledown_over_hand"] is not None:
        part.check("flops_count_matches_hand_count", abs(fig["scaledown_over_hand"] - 1) < 0.02,
                   round(fig["scaledown_over_hand"], 4))


def _median(values: list[float]):
    values = sorted(values)
    return values[len(values) // 2] if values else None


# ---- host syncs per step ----------------------------------------------------------------------------------
SYNC_HOOKS = ("item", "tolist", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def sync_recorder(device: str, on_sync: Callable[[list], None]):
    """Calls on_sync(stack) for every host sync: CUDA's sync debug mode on GPU; on CPU (rehearsal) a warning from
    hooks on the Tensor methods that read values to the host (what would sync on a GPU)."""
    originals = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", message=r".*[Ss]ynchroniz.*")
        shown = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            if "ynchroniz" in str(message):
                try:
                    on_sync(traceback.extract_stack()[:-1])
                except Exception as exc:  # noqa: BLE001 - never break the training step being measured
                    LOG.append(f"sync record failed: {exc!r}")
            else:
                shown(message, category, filename, lineno, file, line)
        warnings.showwarning = record
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        else:
            for name in SYNC_HOOKS:
                originals[name] = getattr(torch.Tensor, name)

                def hooked(self, *a, _orig=originals[name], **k):
                    warnings.warn("emulated synchronizing operation (CPU rehearsal)", UserWarning)
                    return _orig(self, *a, **k)
                setattr(torch.Tensor, name, hooked)
        try:
            yield
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)


def locate(stack: list) -> str:
    """The innermost frame in scaledown/ (else in transformers/peft/deepspeed/torch) of a sync's stack."""
    here = os.path.abspath(__file__)
    frames = [f for f in stack if os.path.abspath(f.filename) != here and "/warnings.py" not in f.filename]
    def ours(f) -> bool:
        path = f.filename.replace(os.sep, "/")
        return "/scaledown/" in path and "site-packages" not in path

    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if ours(f):
            path = f.filename.replace(os.sep, "/")
            where = f"scaledown/{path.rsplit('/scaledown/', 1)[1]}:{f.lineno} {f.name}: {(f.line or '').strip()[:80]}"
            if i + 1 < len(frames):   # the library frame that synchronised, when it is not scaledown's own line
                inner = frames[-1]
                lib = inner.filename.replace(os.sep, "/").rsplit("/site-packages/", 1)[-1].rsplit("/lib/", 1)[-1]
                where += f"  [via {lib}:{inner.lineno} {inner.name}]"
            return where
    for lib in ("transformers", "peft", "deepspeed", "torch"):
        for f in reversed(frames):
            path = f.filename.replace(os.sep, "/")
            if f"/{lib}/" in path:
                return f"{lib}/{path.rsplit(f'/{lib}/', 1)[1]}:{f.lineno} {f.name}"
    f = frames[-1] if frames else None
    return f"{f.filename}:{f.lineno} {f.name}" if f else "?"


def count_syncs(part: Part, folder: str, work: str, device: str, shape: dict) -> None:
    from scaledown.cli.train import train_main
    steps, logging_steps, skip = shape["sync_steps"], 4, 2
    state = {"step": 0}
    per_step: dict[int, Counter] = {}

    def on_sync(stack):
        per_step.setdefault(state["step"], Counter())[locate(stack)] += 1

    def factory(config):
        return recording_backend(device, count_flops=False, on_step=lambda s: state.update(step=s))(config)

    out = os.path.join(work, "run_syncs")
    shutil.rmtree(out, ignore_errors=True)
    args = train_args(folder, out, device, steps, logging_steps, 0.0)
    with sync_recorder(device, on_sync):
        code = train_main(args, backend_factory=factory)
    part.check("exit_code_0", code == 0, code)
    # step k = from the start of optimizer step k to the start of step k+1 (its logging included); the last step
    # also holds the final save/export, so steady state is steps skip+1 .. steps-1
    steady = list(range(skip + 1, steps))
    logging = [s for s in steady if s % logging_steps == 0]
    other = [s for s in steady if s % logging_steps]

    def mean(ids):
        return sum(sum(per_step.get(s, Counter()).values()) for s in ids) / max(1, len(ids))

    top = Counter()
    for s in steady:
        top.update(per_step.get(s, Counter()))
    part.figures.update(
        mode="cuda sync debug mode" if device == "cuda" else "emulated on CPU (Tensor.item/tolist/bool/float/int)",
        steady_steps=steady, logging_steps=logging,
        syncs_per_step=mean(steady), syncs_per_logging_step=mean(logging), syncs_per_other_step=mean(other),
        per_step={str(s): sum(c.values()) for s, c in sorted(per_step.items())},
        setup_syncs=sum(per_step.get(0, Counter()).values()),
        top_locations=[{"where": w, "per_step": n / len(steady)} for w, n in top.most_common(15)])
    say(f"  syncs per steady step {mean(steady):.2f} (logging steps {mean(logging):.2f}, others {mean(other):.2f})")
    for w, n in top.most_common(15):
        say(f"    {n / len(steady):6.2f}/step  {w}")
    part.check("syncs_recorded", bool(per_step) and len(per_step) >= steps, sorted(per_step))


# ---- 5. ZeRO-3 through torchrun ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], log: str, timeout: float) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(_free_port()),
           os.path.join(ROOT, "launchers", "train_gpu.py"), *args]
    say("  " + " ".join(cmd[1:]))
    env = dict(os.environ, PYTHONUNBUFFERED="1", NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    # on CPU DeepSpeed JIT-builds its shared-memory comm op; a folder per environment keeps other environments'
    # builds of it (another source path: a rebuild, under one lock) from stalling this one. No op is built on CUDA.
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    start = time.perf_counter()
    with open(log, "w") as f:
        code = run_bounded(cmd, env, f, timeout)
    say(f"  exit {code} after {time.perf_counter() - start:.1f} s; log {log}")
    return code


def run_bounded(cmd: list[str], env: dict, stdout, timeout: float) -> int:
    """Run `cmd` in its own process group; past `timeout` the whole group (torchrun and its ranks) is ended."""
    import signal
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        raise RuntimeError(f"{' '.join(cmd[:6])} ... ran past {timeout:.0f} s and was stopped (process group)")


def _tail(log: str, chars: int = 3000) -> str:
    with open(log, errors="replace") as f:
        return f.read()[-chars:]


def zero3(part: Part, folder: str, work: str, device: str, timeout: float) -> None:
    from safetensors.torch import load_file, save_file
    ds = os.path.join(ROOT, "ds_configs", "zero3.json")
    common = ["--deepspeed", ds, "--preset", "tiny", "--generator_model_name", folder, "--gradient_checkpointing",
              "true", "--generator_warmup_ratio", "0", "--warmup_ratio", "0", "--batch_size", "8",
              "--micro_batch_size", "4", "--logging_steps", "1", "--no_progress"]
    a = os.path.join(work, "zero3_a")
    shutil.rmtree(a, ignore_errors=True)
    log_a = os.path.join(work, "zero3_a.log")
    evals = "8" if device == "cuda" else "2"
    code = torchrun([*common, "--max_steps", "6", "--save_steps", "2", "--eval_steps", "3", "--num_eval_examples", evals,
                     "--eval_max_examples", evals, "--max_new_tokens", "8", "--output_dir", a], log_a, timeout)
    text = open(log_a, errors="replace").read()
    part.figures["run_a_log_tail"] = _tail(log_a, 1500)
    if not part.check("run_a_exit_0", code == 0, code):
        say(_tail(log_a))
    if device == "cuda":   # NCCL_DEBUG=INFO (set in torchrun()) makes NCCL print its initialisation
        part.check("process_group_nccl", "NCCL INFO" in text and "Setting accelerator to CPU" not in text,
                   [ln.strip()[:160] for ln in text.splitlines() if "NCCL INFO" in ln][:2])
    else:
        part.check("cpu_accelerator_gloo", "Setting accelerator to CPU" in text)
    losses = tb_scalars(a, "train/loss")
    part.figures["run_a_losses"] = {k: round(v, 4) for k, v in sorted(losses.items())}
    part.check("run_a_six_finite_losses", sorted(losses) == list(range(1, 7))
               and all(v == v and abs(v) < 1e4 for v in losses.values()))
    accuracy = tb_scalars(a, "eval/accuracy")
    part.figures["run_a_eval_accuracy"] = accuracy
    part.check("evaluation_generated", bool(accuracy) and "ZeRO-3 generation" in text,
               [ln.strip()[:200] for ln in text.splitlines() if "ZeRO-3 generation" in ln][:1])
    part.check("checkpoints_saved", all(os.path.isfile(os.path.join(a, "checkpoints", f"step_000000{s}",
                                                                      "trainer_state.json")) for s in (2, 4, 6)))
    # stopped after saving step 4 (a crash or preemption there): what step 6 and the export left is removed
    d = os.path.join(work, "zero3_resume")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(a, d)
    shutil.rmtree(os.path.join(d, "checkpoints", "step_0000006"))
    shutil.rmtree(os.path.join(d, "final"))
    os.remove(os.path.join(d, "train_summary.json"))
    with open(os.path.join(d, "checkpoints", "latest"), "w") as f:
        f.write("step_0000004")
    log_r = os.path.join(work, "zero3_resume.log")
    code = torchrun(["--deepspeed", ds, "--resume_from", "auto", "--output_dir", d, "--no_progress"], log_r, timeout)
    text = open(log_r, errors="replace").read()
    part.figures["resume_log_tail"] = _tail(log_r, 1500)
    if not part.check("resume_exit_0", code == 0, code):
        say(_tail(log_r))
    part.check("resumed_at_step_4", "at step 4/6" in text,
               [ln.strip()[:200] for ln in text.splitlines() if "resumed from" in ln][:1])
    state = json.load(open(os.path.join(d, "checkpoints", "step_0000006", "trainer_state.json")))
    part.check("resume_finished_step_6", int(state.get("step", -1)) == 6 and os.path.isdir(os.path.join(d, "final")),
               state.get("step"))
    resumed = tb_scalars(d, "train/loss")
    diffs = {s: abs(resumed[s] - losses[s]) for s in (5, 6) if s in resumed and s in losses}
    part.figures["resume_loss_vs_uninterrupted"] = {s: (round(resumed.get(s, float("nan")), 5),
                                                        round(losses.get(s, float("nan")), 5)) for s in (5, 6)}
    part.check("resumed_losses_match_uninterrupted", len(diffs) == 2 and max(diffs.values()) < 0.05, diffs)
    # --init_compressor_from a saved run (its compressor made distinct from the generator's copy) under ZeRO-3
    pre = os.path.join(work, "zero3_pre")
    shutil.rmtree(pre, ignore_errors=True)
    shutil.copytree(os.path.join(a, "final"), pre)
    weights = os.path.join(pre, "compressor", "model.safetensors")
    g = torch.Generator().manual_seed(7)
    saved = {k: (v.float() + 0.05 * torch.randn(v.shape, generator=g)).to(v.dtype) if v.is_floating_point() else v
             for k, v in load_file(weights).items()}
    save_file(saved, weights, metadata={"format": "pt"})
    c = os.path.join(work, "zero3_init")
    shutil.rmtree(c, ignore_errors=True)
    log_c = os.path.join(work, "zero3_init.log")
    code = torchrun([*common, "--init_compressor_from", pre, "--max_steps", "2", "--learning_rate_compressor_nlayers",
                     "5e-5", "--eval_max_examples", "0", "--eval_steps", "0", "--save_steps", "0",
                     "--output_dir", c], log_c, timeout)
    part.figures["init_log_tail"] = _tail(log_c, 1500)
    if not part.check("init_compressor_exit_0", code == 0, code):
        say(_tail(log_c))
    final = load_file(os.path.join(c, "final", "compressor", "model.safetensors"))
    diff = max((final[k].float() - v.float()).abs().max().item() for k, v in saved.items() if v.is_floating_point())
    part.check("init_compressor_loaded", diff < 2e-3, f"max |final - saved| = {diff:.2e} (noise added: 0.05)")


# ---- 6. latency -------------------------------------------------------------------------------------------
def latency(part: Part, work: str, out_dir: str, device: str, timeout: float) -> None:
    import inspect
    from scaledown.evaluation import latency as lat
    source = inspect.getsource(lat.answer_seconds) + inspect.getsource(lat.synchronize)
    part.check("code_synchronises_around_timed_call", source.count("sync(device)") >= 2
               and "torch.cuda.synchronize" in source)
    folder = os.path.join(work, "latency")
    shutil.rmtree(folder, ignore_errors=True)
    extra = (["--documents", "1,5,10,20,50", "--repeats", "3"] if device == "cuda" else
             ["--documents", "1,3", "--repeats", "1", "--hidden_size", "64", "--num_layers", "2",
              "--intermediate_size", "128", "--document_tokens", "32", "--generated_tokens", "2", "--threads", "1"])
    cmd = [sys.executable, "-m", "scaledown.cli.main", "bench", "latency", "--output", folder, "--device", device,
           "--batch_sizes", "8", *extra]
    say("  " + " ".join(cmd[1:]))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    log = os.path.join(work, "latency.log")
    with open(log, "w") as f:
        code = run_bounded(cmd, env, f, timeout)
    for line in _tail(log, 3000).splitlines()[-12:]:
        say("  | " + line)
    part.check("exit_code_0", code == 0, code)
    report = json.load(open(os.path.join(folder, "latency.json")))
    shutil.copy(os.path.join(folder, "latency.json"), os.path.join(out_dir, "latency.json"))
    part.figures["environment"] = report["environment"]
    part.figures["points"] = [{"documents": r["documents"], "batch": r["batch_size"],
                               "compressed_ms_per_query": round(r["compressed"]["ms_per_query"], 3),
                               "uncompressed_ms_per_query": round(r["uncompressed"]["ms_per_query"], 3),
                               "speedup": round(r["speedup"], 3)} for r in report["results"]]
    part.check(f"ran_on_{device}", report["environment"]["device"].startswith(device), report["environment"]["device"])


# ---- main -------------------------------------------------------------------------------------------------
def summary(results: dict) -> str:
    lines = [f"{'part':<12} {'result':<7} {'s':>7}  checks failed / error"]
    for name in PARTS:
        r = results.get(name)
        if r is None:
            lines.append(f"{name:<12} {'skipped':<7}")
            continue
        bad = [k for k, v in r["checks"].items() if not v]
        err = (r["error"] or "").strip().splitlines()[-1:] if r["error"] else []
        lines.append(f"{name:<12} {'PASS' if r['ok'] else 'FAIL':<7} {r['seconds']:>7.1f}  {', '.join(bad + err)}")
    t = results.get("train", {}).get("figures", {}).get("throughput", {})
    s = results.get("syncs", {}).get("figures", {})
    if t:
        lines.append(f"train: {t.get('tokens_per_sec') or 0:.0f} tokens/s; MFU hand {t.get('hand_mfu')} vs ScaleDown "
                     f"{t.get('scaledown_mfu')} (logged {t.get('logged_mfu_median')}); FLOPs ScaleDown/hand "
                     f"{t.get('scaledown_over_hand')}")
    if s:
        lines.append(f"syncs: {s.get('syncs_per_step')} per step ({s.get('syncs_per_logging_step')} logging, "
                     f"{s.get('syncs_per_other_step')} other); top: "
                     + "; ".join(f"{x['where'][:70]} x{x['per_step']:.2f}" for x in s.get("top_locations", [])[:3]))
    for p in results.get("latency", {}).get("figures", {}).get("points", []):
        lines.append(f"latency: docs {p['documents']:>3} batch {p['batch']}: compressed {p['compressed_ms_per_query']} "
                     f"ms/query, uncompressed {p['uncompressed_ms_per_query']} ms/query, x{p['speedup']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.log, latency.json")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--work", default=None, help="scratch folder for models and runs (default OUT/../gpu_work)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--timeout", type=float, default=300, help="seconds per subprocess")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but no GPU is visible to PyTorch; use --device cpu for the rehearsal", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    work = args.work or os.path.join("/tmp", "scaledown_gpu_check")
    os.makedirs(work, exist_ok=True)
    shape = SHAPES[args.device]
    wanted = set(args.parts.split(","))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict = {"device": args.device, "shape": shape, "started": started}
    folder = os.path.join(work, "bf16_generator")
    t0 = time.perf_counter()

    def save() -> None:
        results["total_seconds"] = round(time.perf_counter() - t0, 1)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
        with open(os.path.join(args.out, "gpu_check.log"), "w") as f:
            f.write("\n".join(LOG) + "\n")

    steps = [("environment", lambda p: environment(p, args.device)),
             ("generator", lambda p: make_generator(p, folder, shape)),
             ("train", lambda p: train_one_process(p, folder, work, args.device, shape,
                                                   results.get("environment", {}).get("figures", {})
                                                   .get("peak_flops", {}).get("bfloat16"))),
             ("syncs", lambda p: count_syncs(p, folder, work, args.device, shape)),
             ("zero3", lambda p: zero3(p, folder, work, args.device, args.timeout)),
             ("latency", lambda p: latency(p, work, args.out, args.device, args.timeout))]
    for name, fn in steps:
        if name in wanted:
            run_part(results, name, fn)
            save()
    for name in ("zero3_a", "zero3_resume", "zero3_init"):
        log = os.path.join(work, name + ".log")
        if os.path.exists(log):
            LOG.append(f"---- tail of {log}\n{_tail(log, 6000)}")
    table = summary(results)
    LOG.append(table)
    results["all_ok"] = all(results[n]["ok"] for n in PARTS if n in results)
    save()
    print(table, flush=True)
    print(f"all_ok={results['all_ok']} in {results['total_seconds']} s; wrote {args.out}/gpu_check.json", flush=True)
    return 0 if results["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
