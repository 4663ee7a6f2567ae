# `scaledown bench flops|latency`: OSCAR's FLOPs table reproduced, and compressed vs uncompressed latency here.
from __future__ import annotations

import importlib.util
import json
import os
from typing import Optional, Sequence

from scaledown.atomic_files import write_text
from scaledown.cli.args import FriendlyParser
from scaledown.cli.oscar_base_flags import add_base_model_flags, base_paths, check_flags_apply
from scaledown.destination import check_destination
from scaledown.errors import ConfigError
from scaledown.evaluation.plots import plot_latency

FLOPS_KEYS = ("uncompressed", "generation_x16", "total_5L", "total_8L", "total_llama")
LABELS = {"uncompressed": "Mistral-7B, no compression", "generation_x16": "generation from x16 memory (PISCO)",
          "total_5L": "OSCAR-5L (generation + compression)", "total_8L": "OSCAR-8L (generation + compression)",
          "total_llama": "OSCAR-llama (generation + compression)"}


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of integers such as 1,5,10, got {text!r}.") from None
    if not values or min(values) < 1:
        raise ConfigError(f"expected positive integers such as 1,5,10, got {text!r}.")
    return values


def _add(parser, name: str, **kw) -> None:
    """--name_with_underscores plus its hyphenated alias."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*flags, **kw)


# ---- flops -------------------------------------------------------------------------------------------
def flops_main(argv: Sequence[str], prog: str) -> int:
    from scaledown.evaluation.flops import Setup, oscar_table
    parser = FriendlyParser(prog=prog, description="FLOPs per query of OSCAR's efficiency setup, counted with "
                            "torch's FlopCounterMode on weightless (meta-device) Mistral-7B / Llama-3.2-1B models, "
                            "beside OSCAR's Table 1. Prints the counting assumptions next to the numbers.")
    _add(parser, "json", help="write the figures (TFLOPs) to this JSON file")
    _add(parser, "overwrite", action="store_true", help="replace an existing --json file")
    defaults = Setup()
    for name in ("query_tokens", "num_documents", "document_tokens", "memory_tokens", "generated_tokens",
                 "template_tokens"):
        _add(parser, name, type=int, default=getattr(defaults, name),
             help=f"(default {getattr(defaults, name)}; OSCAR's setup is the default)")
    args = parser.parse_args(argv)
    for name in ("query_tokens", "num_documents", "document_tokens", "memory_tokens", "generated_tokens",
                 "template_tokens"):   # the comparison needs documents to compress and tokens to generate
        lowest = 0 if name == "template_tokens" else 1
        if getattr(args, name) < lowest:
            raise ConfigError(f"--{name} {getattr(args, name)}: use {'0 or more' if lowest == 0 else 'at least 1'} "
                              f"(OSCAR's setup: {getattr(defaults, name)}). With no documents there is nothing to "
                              f"compress; the no-documents system is the 'no_docs' row of `scaledown eval "
                              f"--baselines`." if name == "num_documents" else
                              f"--{name} {getattr(args, name)}: use {'0 or more' if lowest == 0 else 'at least 1'} "
                              f"(OSCAR's setup: {getattr(defaults, name)}).")
    if args.json:
        check_destination(args.json, args.overwrite, "--json")
    setup = Setup(**{k: getattr(args, k) for k in ("query_tokens", "num_documents", "document_tokens",
                                                  "memory_tokens", "generated_tokens", "template_tokens")})
    table = oscar_table(setup, progress=lambda what: print(f"counting {what} ...", flush=True))
    flops, paper = table["tflops"], table["paper"]
    is_oscar_setup = setup == Setup()
    print(f"\nTFLOPs per query ({setup.query_tokens}-token query, {setup.num_documents} x {setup.document_tokens}"
          f"-token documents, {setup.generated_tokens} generated tokens):")
    print(f"  {'':42} {'counted':>8} {'OSCAR':>7} {'diff':>7}")
    for key in FLOPS_KEYS:
        diff = f"{100 * (flops[key] / paper[key] - 1):+6.1f}%" if is_oscar_setup else ""
        print(f"  {LABELS[key]:42} {flops[key]:8.2f} {paper[key]:7.2f} {diff:>7}")
    for name in ("5L", "8L", "llama"):
        d = table["details"][f"compression_{name}"]
        print(f"  compression {name}: {d['tflops']:.2f} ({d['input_tokens']}+{setup.memory_tokens} tokens per document); "
              f"ScaleDown's own inputs ({d['scaledown_input_tokens']}+{setup.memory_tokens} tokens): "
              f"{d['scaledown_inputs_tflops']:.2f}, total {d['scaledown_inputs_total']:.2f}")
    print("counting assumptions:")
    for line in table["assumptions"]:
        print(f"  - {line}")
    if args.json:
        out = {k: flops[k] for k in FLOPS_KEYS}
        out.update({k: v for k, v in flops.items() if k not in out})
        out.update(paper=paper, setup=table["setup"], details=table["details"], assumptions=table["assumptions"],
                   relative_to_paper={k: flops[k] / paper[k] - 1 for k in FLOPS_KEYS} if is_oscar_setup else None)
        _write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


# ---- latency -----------------------------------------------------------------------------------------
def latency_main(argv: Sequence[str], prog: str) -> int:
    import torch

    from scaledown.evaluation import latency
    shape, settings = latency.BenchModelShape(), latency.LatencySettings()
    parser = FriendlyParser(prog=prog, description="Wall-clock latency per query and queries/s, compressed vs "
                            "uncompressed, same generator, on this hardware; sweeps documents per query and batch "
                            "size, alternating the two paths. Writes OUTPUT/latency.json and OUTPUT/latency.png.")
    _add(parser, "output", default="bench_latency", help="folder for latency.json and latency.png")
    _add(parser, "model", help="a saved ScaleDown model folder or a released OSCAR folder (naver/oscar-* layout); "
                               "default: a random small Mistral-shaped model")
    _add(parser, "trust_remote_code", action="store_true", help="let --model's generator run its own code (a value "
                                                                "saved in the folder is ignored)")
    add_base_model_flags(parser)
    _add(parser, "overwrite", action="store_true", help="replace latency.json / latency.png already in --output")
    _add(parser, "documents", default="1,5,10,20,50", help="documents per query to sweep (comma-separated)")
    _add(parser, "batch_sizes", default="8", help="batch sizes to sweep (comma-separated)")
    _add(parser, "repeats", type=int, default=settings.repeats, help="timed runs per path and point (median kept)")
    _add(parser, "warmup", type=int, default=settings.warmup, help="untimed runs per path and point")
    _add(parser, "generated_tokens", type=int, default=settings.generated_tokens, help="tokens generated per answer")
    _add(parser, "document_tokens", type=int, default=settings.document_tokens,
         help="document length (random model only; a saved model uses its doc_max_length)")
    _add(parser, "compression_rate", type=int, default=settings.compression_rate, help="random model only")
    for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
        _add(parser, name, type=int, default=getattr(shape, name), help="random model shape")
    _add(parser, "compressor_layers", type=int, default=None, help="random model: n_layers compressor depth "
         "(default: a quarter of --num_layers, OSCAR-8L's proportion)")
    _add(parser, "threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _add(parser, "device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    _add(parser, "dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
         help="auto: bfloat16 on GPU, float32 on CPU")
    args = parser.parse_args(argv)
    check_flags_apply([args.model], args, "--model")
    check_destination(args.output, args.overwrite, "--output", contents=["latency.json", "latency.png"])
    settings = latency.LatencySettings(documents=_ints(args.documents), batch_sizes=_ints(args.batch_sizes),
                                       document_tokens=args.document_tokens, compression_rate=args.compression_rate,
                                       generated_tokens=args.generated_tokens, repeats=args.repeats,
                                       warmup=args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no GPU is visible to PyTorch; use --device cpu.")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.model:
        from scaledown.models import ScaleDownModel
        model = latency.merge_lora(ScaleDownModel.from_pretrained(args.model, trust_remote_code=args.trust_remote_code,
                                                                  **base_paths(args.model, args)))
        settings.document_tokens = model.config.doc_max_length
        settings.compression_rate = model.config.compression_rate
    else:
        shape = latency.BenchModelShape(**{k: getattr(args, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                                          "num_kv_heads", "intermediate_size",
                                                                          "compressor_layers")})
        model = latency.build_bench_model(shape, settings)
    model = model.to(device=device, dtype=dtype)
    info = latency.describe_model(model)
    print(f"generator {info['generator_parameters'] / 1e6:.1f}M parameters ({info['generator']['num_hidden_layers']} "
          f"layers, hidden {info['generator']['hidden_size']}), {info['compressor_type']} compressor "
          f"{info['compressor_parameters'] / 1e6:.1f}M ({info['compressor_layers']} layers), documents of "
          f"{settings.document_tokens} tokens -> {info['num_memory_tokens']} memory embeddings, "
          f"{settings.generated_tokens} generated tokens, {device} {str(dtype).replace('torch.', '')}, "
          f"{torch.get_num_threads()} threads", flush=True)
    results = latency.run_sweep(model, settings, say=lambda line: print(line, flush=True))
    report = latency.report(model, settings, results)
    report["environment"]["dtype"] = str(dtype).replace("torch.", "")
    os.makedirs(args.output, exist_ok=True)
    json_path, png_path = os.path.join(args.output, "latency.json"), os.path.join(args.output, "latency.png")
    _write_json(json_path, report)
    if importlib.util.find_spec("matplotlib") is None:   # the figures are the result: never lose them to a plot
        print(f"wrote {json_path} (no latency.png: plotting needs matplotlib, `pip install -e .[eval]`; then "
              f"`scaledown plot --latency {json_path}`)")
        return 0
    plot_latency(report, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, json.dumps(data, indent=2) + "\n")


COMMANDS = {"flops": (flops_main, "FLOPs per query, OSCAR's Table 1 reproduced on meta-device models"),
            "latency": (latency_main, "wall-clock latency, compressed vs uncompressed, on this hardware")}


def bench_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown bench") -> int:
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"usage: {prog} {{{','.join(COMMANDS)}}} [flags]   ({prog} <command> --help)", ""]
        lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
        if argv and argv[0] not in ("-h", "--help"):
            raise ConfigError(f"unknown bench command {argv[0]!r}; use one of: {', '.join(COMMANDS)}.")
        print("\n".join(lines))
        return 0 if argv else 2
    fn, _ = COMMANDS[argv[0]]
    return fn(argv[1:], f"{prog} {argv[0]}")
