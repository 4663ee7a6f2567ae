#!/usr/bin/env python
# Training throughput: our DeepSpeed ZeRO-3 backend vs the Hugging Face Trainer on the same DeepSpeed config.
"""Same model (a Mistral-shaped random model saved like a hub checkpoint, larger than the tiny preset),
same synthetic rows, same global batch, micro batch and accumulation, same ZeRO-3 config
(ds_configs/zero3.json with the batch keys written in), same two AdamW learning-rate groups and
linear schedule. Each measurement is a fresh process; (a) launchers/train_gpu.py and (b) the
transformers Trainer alternate (A B, B A, ...), one rank each (the Trainer's DeepSpeed path runs only one rank on
this CPU, see DESIGN.md), then (a) runs once more at --ranks ranks for reference.

Tokens/s counts real (unpadded) compressor + generator tokens (scaledown.data.collator.count_tokens),
over the steps after the first --skip_steps, from the end of one optimizer step to the end of the next.

    python benchmarks/train_throughput.py                      # 6 rounds, 24 steps each (~17 min on 2 cores)
    python benchmarks/train_throughput.py --rounds 2 --steps 12 --skip_steps 3 --ranks 0   # a quick look

--torch_backend measures instead our two multi-rank engines side by side: the PyTorch-native backend
(launchers/train_torch.py, FSDP2) against DeepSpeed ZeRO-3 (launchers/train_gpu.py), both under torchrun at
--ranks ranks (default 2) with the model, rows and global batch above, alternating; it prints tokens/s of each, the
ratio torch / DeepSpeed (target >= 1.0) and the parameter elements rank 0 holds under each (about 1/ranks).

    python benchmarks/train_throughput.py --torch_backend --rounds 2 --steps 12 --skip_steps 3
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ZERO3 = os.path.join(ROOT, "ds_configs", "zero3.json")
# tiny-but-not-trivial: 6 layers x 384 wide (about 4x the tiny preset's weights), same tokenizer
MODEL_SHAPE = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                   num_key_value_heads=2, head_dim=64)


def bench_flags(workdir: str, steps: int, batch: int, micro: int) -> list[str]:
    """ScaleDownConfig flags both sides use (the HF worker parses the same ones)."""
    return ["--preset", "tiny", "--generator_model_name", os.path.join(workdir, "model"),
            "--num_compressor_layers", "2", "--generator_warmup_ratio", "0", "--max_steps", str(steps),
            "--batch_size", str(batch), "--micro_batch_size", str(micro), "--use_bf16", "false"]


def make_model(workdir: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    torch.manual_seed(0)
    config = MistralConfig(**{**tiny_models.tiny_generator_config_dict(), **MODEL_SHAPE})
    AutoModelForCausalLM.from_config(config).save_pretrained(os.path.join(workdir, "model"))
    load_tiny_tokenizer().save_pretrained(os.path.join(workdir, "model"))


def tokens_per_sec(times: list[float], tokens: list[int], skip: int) -> float:
    """Tokens/s between the ends of optimizer steps `skip` .. last (times/tokens: cumulative at each step end)."""
    return (tokens[-1] - tokens[skip]) / (times[-1] - times[skip])


def logged_tokens_per_sec(run_dir: str, skip: int) -> float:
    """Tokens/s a run logged (perf/tokens_per_sec weighted by perf/step_seconds), its first `skip` steps left out."""
    from scaledown.evaluation.tb_logs import run_scalars
    scalars = run_scalars(run_dir)
    rate, seconds = scalars["perf/tokens_per_sec"], scalars["perf/step_seconds"]
    steps = sorted(rate)[skip:]
    return sum(rate[s] * seconds[s] for s in steps) / sum(seconds[s] for s in steps)


# ---- (a) ours: the real entry point, figures read back from its TensorBoard events -------------------
def run_ours(workdir: str, flags: list[str], ranks: int, skip: int, env: dict) -> float:
    out = tempfile.mkdtemp(prefix="ours-", dir=workdir)
    args = ["--deepspeed", ZERO3, *flags, "--logging_steps", "1", "--save_steps", "0", "--num_eval_examples", "1",
            "--eval_max_examples", "0", "--output_dir", out]
    launcher = os.path.join(ROOT, "launchers", "train_gpu.py")
    if ranks == 1:
        cmd = [sys.executable, launcher, *args]
    else:
        cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(ranks), "--master_port",
               str(_free_port()), launcher, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"our run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return logged_tokens_per_sec(out, skip)


# ---- (c) our two multi-rank engines, torch (FSDP2) vs DeepSpeed ZeRO-3, both under torchrun -------------
HELD = re.compile(r"parameter elements held by this rank: ([\d,]+) of ([\d,]+)")


def run_engine(engine: str, workdir: str, flags: list[str], ranks: int, skip: int, env: dict) -> tuple[float, str]:
    """(tokens/s, rank 0's 'held' figure) of one run of launchers/train_torch.py or launchers/train_gpu.py."""
    out = tempfile.mkdtemp(prefix=f"{engine}-", dir=workdir)
    args = [*flags, "--logging_steps", "1", "--save_steps", "0", "--num_eval_examples", "1", "--eval_max_examples",
            "0", "--output_dir", out]
    launcher = os.path.join(ROOT, "launchers", "train_torch.py" if engine == "torch" else "train_gpu.py")
    if engine == "deepspeed":
        args = ["--deepspeed", ZERO3, *args]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
           str(_free_port()), launcher, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"the {engine} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    held = HELD.search(proc.stdout + proc.stderr)
    share = (f"{held.group(1)} of {held.group(2)} "
             f"({int(held.group(1).replace(',', '')) / int(held.group(2).replace(',', '')):.1%})" if held else "?")
    return logged_tokens_per_sec(out, skip), share


def torch_vs_deepspeed(args, workdir: str, flags: list[str], env: dict) -> None:
    ranks = args.ranks or 2
    rates: dict[str, list[float]] = {"torch": [], "deepspeed": []}
    held: dict[str, str] = {}
    for round_ in range(args.rounds):
        for engine in (("torch", "deepspeed") if round_ % 2 == 0 else ("deepspeed", "torch")):
            rate, held[engine] = run_engine(engine, workdir, flags, ranks, args.skip_steps, env)
            rates[engine].append(rate)
        print(f"round {round_ + 1}: torch {rates['torch'][-1]:.0f} tok/s, DeepSpeed {rates['deepspeed'][-1]:.0f} "
              f"tok/s, ratio {rates['torch'][-1] / rates['deepspeed'][-1]:.3f}", flush=True)
    a, b = statistics.median(rates["torch"]), statistics.median(rates["deepspeed"])
    print(f"\n{ranks} CPU ranks, {MODEL_SHAPE['num_hidden_layers']}-layer {MODEL_SHAPE['hidden_size']}-wide generator "
          f"+ 2-layer compressor, global batch {args.batch_size}, micro batch {args.micro_batch_size}, {args.steps} "
          f"steps (first {args.skip_steps} left out), median of {args.rounds} alternating runs:")
    print(f"  torch backend (FSDP2)    : {a:8.0f} tokens/s, rank 0 holds {held['torch']} parameter elements")
    print(f"  DeepSpeed ZeRO-3         : {b:8.0f} tokens/s, rank 0 holds {held['deepspeed']} parameter elements")
    print(f"  ratio of the medians     : {a / b:8.3f}   (target >= 1.0)")
    print(f"  per-round ratios         : {', '.join(f'{x / y:.3f}' for x, y in zip(rates['torch'], rates['deepspeed']))}")


# ---- (b) the Hugging Face Trainer, in its own process -------------------------------------------------
def hf_worker(argv: list[str]) -> None:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from scaledown.cli.args import build_parser, config_from_args
    from scaledown.data.collator import count_tokens
    from scaledown.data.synthetic import generate_examples
    from scaledown.models import ScaleDownModel
    from scaledown.models.sharded_weights import use_gatherer
    from scaledown.training.backends.deepspeed.gather import gathered
    from scaledown.training.backends.distributed_env import init_distributed
    from scaledown.training.backends.deepspeed.ds_config import resolve_ds_config
    from scaledown.training.batching import plan_batches
    from scaledown.training.schedule import warmup_steps_for

    parser = build_parser("hf-worker", "")
    parser.add_argument("--skip_steps", type=int, default=3)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    init_distributed(600)  # one rank, as the Trainer's DeepSpeed path needs a process group
    plan = plan_batches(config.batch_size, config.micro_batch_size, 1)
    ds = resolve_ds_config(ZERO3, config, plan)  # the exact dict our backend hands to DeepSpeed
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-"), deepspeed=ds, per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation, max_steps=config.max_steps,
        learning_rate=config.learning_rate_generator, weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1, adam_beta2=config.adam_beta2, adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm, lr_scheduler_type="linear",
        warmup_steps=warmup_steps_for(config.max_steps, config.warmup_ratio),
        logging_steps=1, save_strategy="no", report_to=[], seed=config.seed, remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True, bf16=False)
    # after TrainingArguments: transformers loads the generator into ZeRO-3 partitions; our model code reads
    # whole weights (the compressor copies the generator's first layers) through the same gatherer ours installs
    with use_gatherer(gathered):
        model = ScaleDownModel(config)
    model.set_trainable("finetune")
    rows = generate_examples(config.batch_size * config.max_steps, seed=config.seed)

    class ForTrainer(torch.nn.Module):
        accepts_loss_kwargs = False  # the loss is a per-micro-batch mean: the Trainer divides by accumulation

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **batch):
            return {"loss": self.inner(batch, documents_as="memory").loss}

    class Collate:
        tokens = 0

        def __call__(self, batch_rows):
            batch = model.inputs.collate(batch_rows, mode="memory", max_documents=config.num_documents_train)
            Collate.tokens += count_tokens(batch)
            return batch

    marks: list[tuple[float, int]] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *unused, **kwargs):
            marks.append((time.perf_counter(), Collate.tokens))

    class TwoGroupTrainer(Trainer):  # OSCAR's two learning rates, as our backend uses
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                groups = [g for g in self.model.inner.parameter_groups() if g["params"]]
                self.optimizer = torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2),
                                                   eps=config.adam_epsilon, weight_decay=config.weight_decay)
            return self.optimizer

    trainer = TwoGroupTrainer(model=ForTrainer(model), args=training_args, train_dataset=rows,
                              data_collator=Collate(), callbacks=[StepTimes()])
    trainer.train()
    times, tokens = [m[0] for m in marks], [m[1] for m in marks]
    print(json.dumps({"tokens_per_sec": tokens_per_sec(times, tokens, args.skip_steps - 1)}))


def run_hf(flags: list[str], skip: int, env: dict) -> float:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "hf", *flags, "--skip_steps",
                           str(skip)], env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"the Hugging Face Trainer run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])["tokens_per_sec"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return hf_worker(sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="(ours, Trainer) pairs at one rank, order alternating")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run")
    parser.add_argument("--skip_steps", type=int, default=4, help="first steps left out (warm-up, first gathers)")
    parser.add_argument("--batch_size", type=int, default=16, help="global batch")
    parser.add_argument("--micro_batch_size", type=int, default=8, help="per rank (1 rank: accumulation 2)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the extra multi-rank run of ours (0: none)")
    parser.add_argument("--workdir", default=None, help="where the model and runs go (default: a temp folder)")
    parser.add_argument("--torch_backend", action="store_true",
                        help="measure the torch backend (FSDP2) against DeepSpeed ZeRO-3 instead, both at --ranks")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="train-throughput-")
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    make_model(workdir)
    flags = bench_flags(workdir, args.steps, args.batch_size, args.micro_batch_size)
    if args.torch_backend:
        return torch_vs_deepspeed(args, workdir, flags, env)
    ours, theirs = [], []
    for round_ in range(args.rounds):
        # A B, then B A: a machine whose load drifts favours neither side
        if round_ % 2 == 0:
            ours.append(run_ours(workdir, flags, 1, args.skip_steps, env))
            theirs.append(run_hf(flags, args.skip_steps, env))
        else:
            theirs.append(run_hf(flags, args.skip_steps, env))
            ours.append(run_ours(workdir, flags, 1, args.skip_steps, env))
        print(f"round {round_ + 1}: ours {ours[-1]:.0f} tok/s, HF Trainer {theirs[-1]:.0f} tok/s, "
              f"ratio {ours[-1] / theirs[-1]:.3f}", flush=True)
    multi = run_ours(workdir, flags, args.ranks, args.skip_steps, env) if args.ranks > 1 else None
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"\nZeRO-3, {MODEL_SHAPE['num_hidden_layers']}-layer {MODEL_SHAPE['hidden_size']}-wide generator + "
          f"2-layer compressor, global batch {args.batch_size}, micro batch {args.micro_batch_size}, "
          f"{args.steps} steps (first {args.skip_steps} left out), median of {args.rounds} alternating runs:")
    print(f"  ours (launchers/train_gpu.py), 1 rank : {a:8.0f} tokens/s")
    print(f"  Hugging Face Trainer, 1 rank         : {b:8.0f} tokens/s")
    paired = statistics.median(x / y for x, y in zip(ours, theirs))  # neighbours in time share the machine's load
    print(f"  ratio of the medians                 : {a / b:8.3f}   (target >= 1.0)")
    print(f"  median of the per-round ratios       : {paired:8.3f}   (rounds: "
          f"{', '.join(f'{x / y:.3f}' for x, y in zip(ours, theirs))})")
    if multi is not None:
        print(f"  ours, {args.ranks} ranks                       : {multi:8.0f} tokens/s (all ranks together)")


if __name__ == "__main__":
    main()
