# ScaleDownTrainer: the backend-agnostic loop (phases, accumulation, logging, eval, checkpoints, resume).
from __future__ import annotations

import functools
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint.safe_load import problem_with
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError
from scaledown.models.inputs import InputBuilder
from scaledown.training import resume, run_folder, tags
from scaledown.training.backends.base import Backend, StepNorm
from scaledown.training.backends.local import LocalBackend
from scaledown.training.batching import BatchPlan, plan_batches
from scaledown.training.evaluate import evaluate
from scaledown.training.run_logger import RunLogger
from scaledown.training.sampler import GlobalBatchOrder
from scaledown.training.schedule import lr_multiplier, warmup_steps_for
from scaledown.training.step_batches import StepBatches, StepDataset, resolve_workers, step_loader, worker_count_note
from scaledown.training.throughput import TrainingFlops, held_parameters_note, mfu

# per-step sums the loop keeps (this rank's; all-reduced over data-parallel ranks when logged): the first three come
# from the device (read once per logging window), the rest are counted on the host
LOSS_FIELDS = ("objective", "ce_sum", "rerank_sum")
HOST_FIELDS = ("tokens", "documents", "fed_tokens", "examples", "micro_batches")
WINDOW_FIELDS = LOSS_FIELDS + HOST_FIELDS


@dataclass
class Phase:
    name: str            # "warmup" (generator on uncompressed documents) or "finetune" / "pretrain"
    start: int           # first global step of the phase
    end: int             # one past its last step
    documents_as: str    # how the generator sees documents: "text" or "memory"
    # (InputBuilder, rows, mode=..., **options) -> batch; None: question-answering rows (InputBuilder.collate)
    collate: Optional[Callable[..., dict]] = None
    answers: bool = True                  # evaluation also generates and scores answers (question answering)
    max_documents: Optional[int] = None   # documents per row; None: num_documents_train / num_documents_eval
    flops: Optional[TrainingFlops] = None  # counts the model FLOPs of each training batch (for MFU)

    def collate_for(self, inputs, max_documents: int, backend: Backend) -> Callable[[list], dict]:
        """rows -> a collated micro-batch of this phase (a picklable partial: it runs in loader workers)."""
        limit = self.max_documents or max_documents
        options = {"mode": self.documents_as, "max_documents": limit, **backend.collate_options(limit)}
        if self.collate is not None:
            return functools.partial(self.collate, inputs, **options)
        return functools.partial(inputs.collate, **options)


@dataclass
class TrainResult:
    steps: int
    interrupted: bool = False
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    final_dir: Optional[str] = None
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)   # per-step objective (this rank's share x data-parallel ranks)


class ScaleDownTrainer:
    """`ScaleDownTrainer(model, config, train_dataset).train()` -- one process by default.

    Pass `backend=` (DeepSpeed, NxD) to run the same loop distributed. Output folder:
    OUTPUT_DIR/final (Hugging Face), OUTPUT_DIR/checkpoints/step_N, OUTPUT_DIR/runs (TensorBoard).
    """

    def __init__(self, model, config: ScaleDownConfig, train_dataset, eval_dataset=None,
                 backend: Optional[Backend] = None, resume_from: Optional[str] = None, progress: bool = True,
                 export_final: bool = True, allow_changed_settings: bool = False, overwrite_output_dir: bool = False,
                 run_record: Optional[dict[str, Any]] = None, resume_command: Optional[str] = None):
        """`resume_from`: 'auto' or a checkpoint / run folder; the config must be the checkpoint's except free settings
        (training/resume.py), unless `allow_changed_settings`. A new run refuses an `output_dir` holding another run
        unless `overwrite_output_dir`. `run_record`: what the CLI records for resuming (resume.run_record);
        `resume_command`: printed when SIGTERM / SIGINT stop the run."""
        self.model = model
        self.config = config
        self.train_dataset = train_dataset
        self.eval_rows = list(eval_dataset) if eval_dataset is not None else []
        self.backend = backend or LocalBackend(config)
        self.resume_from = resume_from
        self.progress = progress
        self.export_final = export_final
        self.allow_changed_settings = allow_changed_settings
        self.overwrite_output_dir = overwrite_output_dir
        self.run_record = dict(run_record or {})
        self.resume_command = resume_command
        self._stop: Optional[str] = None   # the name of the signal that asked the run to stop

    # ---- phases ----------------------------------------------------------------------------------
    def phases(self, steps_per_epoch: int) -> list[Phase]:
        cfg = self.config
        total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.num_epochs * steps_per_epoch))
        warm = cfg.generator_warmup_steps(total)
        if cfg.stage == "pretrain":  # plain-text rows (data/pretraining.py): auto-encoding + continuation
            text = dict(collate=InputBuilder.collate_pretraining, answers=False, max_documents=1)
            out = [Phase("warmup", 0, warm, "text", **text)] if warm else []
            return out + [Phase("pretrain", warm, total, "memory", **text)]
        out = [Phase("warmup", 0, warm, "text")] if warm else []
        return out + [Phase("finetune", warm, total, "memory")]

    def _enter(self, phase: Phase, plan: BatchPlan, fresh: bool) -> None:
        model = self.backend.model
        if phase.name == "warmup":
            model.set_trainable("warmup")
            groups = model.warmup_parameter_groups()
        else:
            if fresh and phase.start > 0:  # after a warm-up the compressor restarts from the trained layers
                model.reinit_compressor_from_generator()
            if phase.start > 0:   # a warm-up trained the base generator: saved with the model, also when this
                model.generator_base_modified = True   # process resumed after it (it never ran set_trainable("warmup"))
            model.set_trainable(phase.name)
            groups = model.parameter_groups()
        steps = phase.end - phase.start
        schedule = lr_multiplier(self.config.lr_scheduler, steps, warmup_steps_for(steps, self.config.warmup_ratio))
        self.backend.prepare(groups, schedule, plan.accumulation)

    # ---- main loop -------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        try:
            return self._train()
        finally:
            self._restore_signals()

    def _train(self) -> TrainResult:
        cfg, be = self.config, self.backend
        be.setup(self.model)
        if cfg.gradient_checkpointing:
            be.enable_gradient_checkpointing()
        plan = plan_batches(cfg.batch_size, cfg.micro_batch_size, be.dp_size)
        order = GlobalBatchOrder(len(self.train_dataset), plan, cfg.seed, shuffle=cfg.shuffle_data)
        phases = self.phases(order.steps_per_epoch)
        total = phases[-1].end
        root = ckpt.checkpoints_root(cfg.output_dir)
        resume_path = resume.locate(self.resume_from, cfg.output_dir)
        state = resume.read_state(resume_path) if resume_path else None
        if state is not None:
            resume.check_config(state, cfg, self.allow_changed_settings, resume_path)
            self._check_files(resume_path)
        else:
            self._start_fresh()
            # dropout and every other draw of the run follow config.seed, whatever ran before in this process
            # (a resumed run restores the checkpoint's generators instead)
            random.seed(cfg.seed)
            torch.manual_seed(cfg.seed)
        start = int(state["step"]) if state else 0
        phase = next(p for p in phases if p.name == state["phase"]) if state else phases[0]
        self._enter(phase, plan, fresh=False)
        result = TrainResult(steps=start)
        log = RunLogger(cfg.output_dir, be.is_main, total, start, progress=self.progress)
        if resume_path:
            client = be.load_checkpoint(resume_path)
            for key in ("run_inputs", "data_files", "changed_settings"):   # the API keeps the run's record
                if key not in self.run_record and key in state:
                    self.run_record[key] = state[key]
            _set_rng(_own_rng(client, be.rank, be.world_size))
            log.write(f"resumed from {resume_path} at step {start}/{total}" + (
                "; the run had finished training: nothing is left to train, the final model is written again from "
                "this checkpoint" if start >= total else ""))
        else:
            log.write(f"training {total} steps ({', '.join(f'{p.name} {p.end - p.start}' for p in phases)}); "
                      f"{plan.describe()}; backend {be.name}")
            log.write(held_parameters_note(be.model, cfg.tensor_parallel_size,   # ~1/world under ZeRO-3 / FSDP
                                           cfg.pipeline_parallel_size))
            if cfg.stage == "finetune" and be.is_main:
                warn_if_compressor_untrained(be.model)
            if self.eval_rows:
                result.eval_before = self._evaluate(phases[-1], 0, log)
        self._install_sigterm()
        flops = TrainingFlops(be.model, cfg.tensor_parallel_size)
        for p in phases:
            p.flops = flops
        workers = resolve_workers(cfg.dataloader_num_workers, getattr(be, "device", torch.device("cpu")).type)
        log.write(worker_count_note(workers, cfg.dataloader_num_workers, getattr(be, "device", torch.device("cpu")).type))
        window = self._new_window()
        t_start = time.perf_counter()
        last_saved = start if resume_path else -1
        step = start
        batches, batches_phase = None, None
        for step in range(start, total):
            while step >= phase.end:
                phase = phases[phases.index(phase) + 1]
                self._enter(phase, plan, fresh=True)
            if batches_phase is not phase:   # one loader per phase: its collate (documents as text or memory) differs
                batches, batches_phase = self._step_batches(phase, order, step, workers), phase
            item = next(batches)
            losses, host = self._train_step(item, phase)
            window["losses"].append(losses)
            window["host"] += host
            window["n"] += 1
            done = step + 1
            log.step(done)   # the bar moves every step; its loss is shown when a window is logged (no device read)
            if done % cfg.logging_steps == 0 or done == total:
                self._log_window(window, done, phase, log, flops, result)
            if cfg.eval_steps and done % cfg.eval_steps == 0 and done < total and self.eval_rows:
                self._evaluate(phase, done, log)
            stop = self._stop_everywhere()
            if (cfg.save_steps and done % cfg.save_steps == 0) or stop:
                self._save(root, done, phase, log)
                last_saved = done
            if stop:
                self._drain_losses(window, result)
                how = self.resume_command or "--resume_from auto"
                log.write(f"{self._stop or 'SIGTERM'}: saved a checkpoint at step {done}; resume with: {how}")
                result.interrupted = True
                break
        batches = None   # stops the loader's workers
        self._drain_losses(window, result)
        result.steps = step + 1 if total > start else start
        result.train_seconds = time.perf_counter() - t_start
        if not result.interrupted:
            if last_saved != result.steps:
                self._save(root, result.steps, phase, log)
            if self.eval_rows:
                result.eval_after = self._evaluate(phase, result.steps, log)
            if self.export_final:
                result.final_dir = os.path.join(cfg.output_dir, "final")
                be.export_pretrained(result.final_dir)
                log.write(f"saved the model to {result.final_dir}")
        log.close()
        return result

    def _step_batches(self, phase: Phase, order: GlobalBatchOrder, first: int, workers: int):
        """This rank's StepBatches for steps first .. phase.end - 1, collated ahead in `workers` processes."""
        be = self.backend
        collate = phase.collate_for(be.model.inputs, self.config.num_documents_train, be)
        dataset = StepDataset(self.train_dataset, order, be.dp_rank, collate, be.host_gather_indices)
        pin = getattr(be, "device", torch.device("cpu")).type == "cuda"
        return step_loader(dataset, first, phase.end, workers, pin)

    def _train_step(self, item: StepBatches, phase: Phase) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (LOSS_FIELDS: this rank's sums, possibly still on the device; HOST_FIELDS)."""
        be = self.backend
        for batch in item.batches:   # counted here: the loader's workers are other processes
            phase.flops.add(batch, phase.documents_as)
        # the global batch's counts, before any backward: every micro-batch is normalised by them (base.StepNorm)
        total = be.all_reduce_sum(item.counts.clone())
        norm = StepNorm(float(total[0]), float(total[1]), self.config.reranking_loss_weight)
        losses, self._grad_norm = be.train_step(item.batches, phase.documents_as, norm)
        host = torch.tensor([*item.counts.tolist(), item.fed_tokens, item.examples, len(item.batches)],
                            dtype=torch.float64)
        return losses, host

    @staticmethod
    def _new_window() -> dict:
        return {"t": time.perf_counter(), "losses": [], "host": torch.zeros(len(HOST_FIELDS), dtype=torch.float64),
                "n": 0, "read": 0}

    def _drain_losses(self, window: dict, result: TrainResult) -> torch.Tensor:
        """Read the window's per-step loss sums from the device (one sync) into result.losses; returns their sum."""
        pending = window["losses"][window["read"]:]
        if pending:
            per_step = torch.stack([t.detach().to("cpu", torch.float64) for t in pending])
            window["read"] = len(window["losses"])
            window["read_sum"] = window.get("read_sum", torch.zeros(len(LOSS_FIELDS), dtype=torch.float64)) \
                + per_step.sum(0)
            # the step objective as this rank estimates it (its share x data-parallel ranks)
            result.losses.extend((per_step[:, 0] * self.backend.dp_size).tolist())
        return window.get("read_sum", torch.zeros(len(LOSS_FIELDS), dtype=torch.float64))

    def _log_window(self, window: dict, step: int, phase: Phase, log: RunLogger, flops: TrainingFlops,
                    result: TrainResult) -> None:
        be = self.backend
        losses = self._drain_losses(window, result)   # the window's one device-to-host read
        elapsed = max(1e-9, time.perf_counter() - window["t"])
        sums = dict(zip(WINDOW_FIELDS, be.all_reduce_sum(torch.cat([losses, window["host"]])).tolist()))
        grad_norm = self._grad_norm
        if torch.is_tensor(grad_norm):
            grad_norm = float(grad_norm)
        # the global batch's token-weighted CE and document-weighted reranking MSE; the loss is the mean of the
        # steps' objectives (for one step: ce + lambda * rerank, exactly what the gradient was taken of)
        values: dict[str, Any] = {tags.LOSS: sums["objective"] / max(1, window["n"]),
                                  tags.GRAD_NORM: grad_norm,
                                  tags.TOKENS_PER_SEC: sums["fed_tokens"] / elapsed,
                                  tags.EXAMPLES_PER_SEC: sums["examples"] / elapsed,
                                  tags.STEP_TIME: elapsed / max(1, window["n"]),
                                  tags.PHASE: 0.0 if phase.name == "warmup" else 1.0,
                                  tags.MEMORY_GB: be.memory_gb()}
        if math.isfinite(sums["ce_sum"]):   # NaN: the backend cannot tell the parts apart (NxD pipeline + reranking)
            values[tags.CE_LOSS] = sums["ce_sum"] / max(1.0, sums["tokens"])
        if (self.config.enable_reranking and phase.documents_as == "memory" and phase.answers
                and math.isfinite(sums["rerank_sum"])):
            values[tags.RERANK_LOSS] = sums["rerank_sum"] / max(1.0, sums["documents"])
        # each tp rank counts its data-parallel rank's batch through whole weights; all_reduce_sum already divides
        # those copies out (NxD and torch backends), so no further factor. Under pipeline parallel a rank counts its
        # own stage's weights only: the figure is low there (README, pipeline stages)
        model_flops = float(be.all_reduce_sum(torch.tensor([flops.take()], dtype=torch.float64))[0])
        values[tags.MFU] = mfu(model_flops / elapsed, be.peak_flops(), be.world_size)
        for name, lr in be.learning_rates().items():
            values[tags.lr_tag(name)] = lr
        log.scalars(values, step)
        log.line(step, values)
        log.step(step, values[tags.LOSS])
        window.clear()
        window.update(self._new_window())

    def _evaluate(self, phase: Phase, step: int, log: RunLogger) -> dict[str, float]:
        cfg = self.config
        micro = cfg.micro_batch_size or plan_batches(cfg.batch_size, None, self.backend.dp_size).micro_batch
        limit = phase.max_documents or cfg.num_documents_eval
        values = evaluate(self.backend, self.eval_rows, phase.documents_as, micro,
                          cfg.eval_max_examples if phase.answers else 0, limit,
                          collate=None if phase.collate is None else
                          lambda inputs, rows, **options: phase.collate(inputs, rows, mode=phase.documents_as, **options))
        if cfg.stage == "pretrain":  # held-out chunks are auto-encoded; plain text has no reranking teacher
            values.pop(tags.EVAL_RERANK_LOSS, None)
            if tags.EVAL_TOKEN_ACCURACY in values:
                values[tags.RECONSTRUCTION_ACCURACY] = values.pop(tags.EVAL_TOKEN_ACCURACY)
        if phase.documents_as != "memory":  # warm-up reads text: keep its curve apart from eval/*
            values = {k.replace("eval/", "eval_uncompressed/"): v for k, v in values.items()}
        log.scalars(values, step)
        log.write(f"eval @ step {step}: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in values.items()))
        return values

    def _save(self, root: str, step: int, phase: Phase, log: RunLogger) -> None:
        be = self.backend
        tag = ckpt.tag_for(step)
        state = {"step": step, "phase": phase.name, "samples_seen": step * self.config.batch_size,
                 "backend": be.name, "dp_size": be.dp_size, "world_size": be.world_size,
                 "config": self.config.to_dict(), "settings_recorded": 1, **self.run_record}
        error: Optional[BaseException] = None
        try:
            # every rank's generators (dropout masks differ per rank): a resume on as many ranks continues each
            rng = {"rng": _get_rng(), "rng_by_rank": be.gather_objects(_get_rng())}
            path = be.save_checkpoint(root, tag, {**state, **rng})
        except Exception as exc:  # every rank learns of a failure on any rank, so none waits for the others
            error = exc
        if self._any_rank(error is not None):
            self._failed_save(root, tag, error)
        be.barrier()
        if be.is_main:  # trainer_state.json last: from here on the checkpoint counts as complete
            try:
                ckpt.write_state(path, state)
            except OSError as exc:
                error = exc
        if self._any_rank(error is not None):
            self._failed_save(root, tag, error)
        if be.is_main:
            ckpt.mark_latest(root, tag)
            ckpt.prune(root, self.config.save_total_limit, protect=path)
        be.barrier()
        log.write(f"checkpoint {path}")

    def _failed_save(self, root: str, tag: str, error: Optional[BaseException]) -> None:
        """Remove what the failed save left (the checkpoint stays invisible) and stop with what went wrong."""
        path = os.path.join(root, tag)
        if self.backend.is_main:
            ckpt.clear_incomplete(path, ignore_errors=True)
        raise ckpt.save_failed(root, tag, error)

    # ---- resuming or starting ------------------------------------------------------------------------
    def _start_fresh(self) -> None:
        """A new run: refuse a folder holding another run unless told to overwrite it (then clear it)."""
        be, output_dir = self.backend, self.config.output_dir
        run_folder.check_new_run(output_dir, self.overwrite_output_dir)
        if self.overwrite_output_dir:
            be.barrier()
            if be.is_main:
                removed = run_folder.clear_run(output_dir)
                if removed:
                    print(f"--overwrite_output_dir: removed the previous run's {', '.join(removed)}", flush=True)
            be.barrier()

    def _check_files(self, path: str) -> None:
        """Every rank checks the checkpoint files it will read; one damaged file anywhere stops all ranks cleanly."""
        problem = next(((f, p) for f in self.backend.checkpoint_files(path) if (p := problem_with(f))), None)
        if self._any_rank(problem is not None):
            if problem:
                raise ckpt.damaged(*problem)
            raise CheckpointError(f"another rank found a damaged file in the checkpoint {path} (its message names the "
                                  f"file and the previous complete checkpoint); nothing was changed.")

    def _any_rank(self, flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
        return bool(self.backend.all_reduce_sum(value)[0] > 0)

    # ---- preemption ------------------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        """SIGTERM (preemption) and SIGINT (Ctrl-C) both finish the step, save a checkpoint and stop."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if self._stop is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt   # a second Ctrl-C: stop now, without the checkpoint
            self._stop = signal.Signals(signum).name

        self._previous_handlers = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signals(self) -> None:
        for sig, previous in getattr(self, "_previous_handlers", {}).items():
            signal.signal(sig, previous)
        self._previous_handlers = {}

    @property
    def stopped_by(self) -> Optional[str]:
        """'SIGTERM' or 'SIGINT' when a signal stopped the run (after saving a checkpoint), else None."""
        return self._stop

    def _stop_everywhere(self) -> bool:
        return self._any_rank(self._stop is not None)


def warn_if_compressor_untrained(model) -> None:
    """Separate compressors (OSCAR-llama, ModernBERT) start outside the generator's space: ask for pretraining."""
    kind = model.config.compressor_type
    if kind == "n_layers" or getattr(model, "compressor_pretrained", True):
        return
    warnings.warn(
        f"fine-tuning a '{kind}' compressor from scratch. Separate compressors start outside the generator's "
        f"embedding space; OSCAR pretrains them first (OSCAR-llama without pretraining: PopQA 0.65 -> 0.51). "
        f"Pretrain it: `python train.py --stage pretrain --compressor_type {kind} [--pretrain_data TEXT.jsonl] "
        f"--output_dir PRE`, then fine-tune with `--init_from PRE/final` (or `--init_compressor_from PRE/final` "
        f"to pair it with another generator).", UserWarning, stacklevel=2)


def _get_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _own_rng(client: dict[str, Any], rank: int, world_size: int) -> Optional[dict[str, Any]]:
    """This rank's saved generators when the checkpoint holds every rank's and the world is the same size; else the
    main rank's (checkpoints written before rng_by_rank, another world size: the run continues, not bit for bit)."""
    by_rank = client.get("rng_by_rank")
    if by_rank and len(by_rank) == world_size:
        return by_rank[rank]
    return client.get("rng")


def _set_rng(state: Optional[dict[str, Any]]) -> None:
    if not state:
        return
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
