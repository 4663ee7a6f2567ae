# `scaledown eval`: accuracy of a saved model beside uncompressed RAG and no documents, on a file or benchmarks.
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from scaledown.atomic_files import write_text
from scaledown.cli.args import FriendlyParser
from scaledown.cli.oscar_base_flags import add_base_model_flags, base_paths, check_flags_apply
from scaledown.data.validation import read_rows
from scaledown.destination import check_destination
from scaledown.errors import ConfigError, DataError
from scaledown.evaluation import qa_datasets
from scaledown.evaluation.paper_table import format_table
from scaledown.evaluation.qa_datasets import attach_documents, to_rows

DESCRIPTION = ("Evaluate a saved ScaleDown model: exact match, token F1, ROUGE-L and Match (gold answer contained, "
               "as BERGEN/OSCAR compute it), optionally an LLM judge, and nDCG@10/MRR when the model has a reranking "
               "head. --baselines also answers with the same generator reading the documents as text (uncompressed "
               "RAG) and with no documents. Writes OUTPUT/predictions.jsonl and OUTPUT/metrics.json; with "
               "--benchmark, one folder per benchmark and a table in the form of OSCAR's Table 1.")


def build_parser(prog: str) -> FriendlyParser:
    p = FriendlyParser(prog=prog, description=DESCRIPTION)

    def add(name: str, **kw) -> None:
        p.add_argument(f"--{name}", *([f"--{name.replace('_', '-')}"] if "_" in name else []), **kw)

    add("model", required=True, nargs="+", help="one or more models: saved ScaleDown folders (a training run's "
                                                "OUTPUT_DIR/final, or OUTPUT_DIR) or released OSCAR folders "
                                                "(naver/oscar-* format); several go into one table")
    add("data", help="rows to evaluate: ScaleDown rows (query, documents, answer/answers) in .json/.jsonl/.parquet, "
                     "or a benchmark file (KILT, PopQA or ASQA format; needs --corpus for retrieval)")
    add("benchmark", help="comma-separated benchmarks: nq, triviaqa, hotpotqa, popqa, asqa, or 'all'; read from "
                          "--data_dir (local copies) or the hub through `datasets`")
    add("data_dir", help="folder with local benchmark copies (<name>.jsonl or <name>-dev-kilt.jsonl)")
    add("split", help="hub split to read (default: the one OSCAR reports, e.g. validation)")
    add("corpus", help="corpus to retrieve from (KILT knowledge source, or .jsonl/.parquet with text, id, title); "
                       "chunked into doc_max_length-token passages as prepare-data does")
    add("retriever", default="bm25", help="bm25 (default, offline), splade (OSCAR's naver/splade-v3), a SPLADE "
                                          "model name, or auto (SPLADE when it can be loaded, else BM25)")
    add("retriever_model", help="SPLADE model (default naver/splade-v3; tiny: offline random)")
    add("index_dir", help="where the passage store and index are kept and reused (default OUTPUT/index)")
    add("skip_bad_rows", action="store_true", help="skip and count malformed corpus rows instead of stopping")
    add("trust_remote_code", action="store_true", help="let the models this command loads (the evaluated model's "
                                                        "generator, judge, SPLADE) run their own code; a value saved "
                                                        "in the model folder is ignored")
    add_base_model_flags(p)
    add("output", required=True, help="output folder")
    add("overwrite", action="store_true", help="replace the results an earlier evaluation wrote to --output "
                                               "(its retrieval index is reused either way)")
    add("baselines", action="store_true", help="also evaluate uncompressed RAG and no-documents with the same generator")
    add("num_documents", type=int, help="documents per query (default: the model's num_documents_eval, OSCAR: 10)")
    add("max_examples", type=int, help="evaluate only the first N rows of each dataset")
    add("batch_size", type=int, default=16, help="queries per generation batch (default 16)")
    add("max_new_tokens", type=int, help="answer length cap (default: the model's max_new_tokens)")
    add("judge", help="LLM judge: a causal LM hub name or folder (OSCAR used SOLAR-10.7B-Instruct), or 'tiny' "
                      "(offline random tiny LM, to test the path)")
    add("judge_batch_size", type=int, default=8, help="prompts per judge forward pass")
    add("device", default="auto", choices=["auto", "cpu", "cuda", "gpu"], help="where to run (auto: GPU if present)")
    add("no_progress", action="store_true", help="no progress bars")
    add("no_flops", action="store_true", help="skip the TFLOPs column of the benchmark table")
    return p


def _read_dataset(path: str, max_examples: Optional[int]):
    """(rows, needs_retrieval) of a file: ScaleDown rows are validated with file/line errors."""
    from scaledown.data import ScaleDownDataset
    located = read_rows(path)
    first = located[0][1]
    if isinstance(first, dict) and "documents" in first:
        rows = ScaleDownDataset(path, require_answer=False).rows
        return rows[:max_examples] if max_examples else rows
    return to_rows(located, max_examples)


def collect_datasets(args) -> list[tuple[str, str, list[dict]]]:
    """[(name, source, rows)] from --benchmark and/or --data, before any model is loaded."""
    out = []
    if args.benchmark:
        for bench in qa_datasets.parse_benchmarks(args.benchmark):
            source, located = qa_datasets.load_records(bench, args.data_dir, args.split)
            out.append((bench.name, source, qa_datasets.to_rows(located, args.max_examples)))
    elif args.data:
        out.append(("data", args.data, _read_dataset(args.data, args.max_examples)))
    else:
        raise ConfigError("nothing to evaluate: pass --data FILE, or --benchmark NAMES (with --data_dir DIR for "
                          "local copies).")
    return out


def _saved_config(model_dir: str, trust_remote_code: bool = False, args=None):
    """A model's ScaleDownConfig without loading weights (ScaleDown folder or released OSCAR folder: its base
    models resolved now, with --generator_path / --compressor_path, so a missing one fails before any work)."""
    from scaledown.models.oscar_format import is_released_folder, released_config
    from scaledown.models.serialization import read_saved_config
    if is_released_folder(model_dir):
        return released_config(model_dir, **base_paths(model_dir, args), check=True)
    return read_saved_config(model_dir, trust_remote_code=trust_remote_code)[2]


def model_labels(paths: Sequence[str]) -> list[str]:
    """Short distinct names for the table: the folder name (with its parent when two share one)."""
    names = [os.path.basename(os.path.abspath(p)) for p in paths]
    names = [("_".join(os.path.abspath(p).split(os.sep)[-2:]) if names.count(n) > 1 else n)
             for p, n in zip(paths, names)]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def _document_tokenizer(model_dir: str, config):
    """The tokenizer that counts document tokens (the compressor's), read from the saved model folder."""
    from transformers import AutoTokenizer

    from scaledown.models.oscar_format import is_released_folder
    from scaledown.models.serialization import resolve_model_dir
    if is_released_folder(model_dir):
        from scaledown.models import loading
        return loading.load_tokenizer(config.compressor_tokenizer_name), config.compressor_tokenizer_name
    folder = resolve_model_dir(model_dir)
    name = "compressor_tokenizer" if os.path.isdir(os.path.join(folder, "compressor_tokenizer")) else "tokenizer"
    path = os.path.join(folder, name)
    return AutoTokenizer.from_pretrained(path), path


def _autocast(device):
    import torch
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return None


def _prepare_rows(rows: list[dict], config, tokenizer, name: str, num_documents: int,
                  generator_tokenizer=None) -> list[dict]:
    """Length handling as in training (truncate / chunk, the model's long_documents) and validation of gold
    answers and labels."""
    from scaledown.data import ScaleDownDataset
    from scaledown.evaluation.evaluator import check_eval_rows
    fix = (f"the model's saved config has long_documents='{config.long_documents}', which `scaledown eval` follows: "
           f"retrain with --long_documents chunk to split them, or give shorter documents")
    rows = ScaleDownDataset(rows, config, tokenizer=tokenizer, require_answer=False, num_documents=num_documents,
                            name=name, generator_tokenizer=generator_tokenizer, long_documents_fix=fix).rows
    for row in rows:  # chunking changes the document list: labels per document no longer line up
        if row.get("relevance") is not None and len(row["relevance"]) != len(row["documents"]):
            row.pop("relevance")
    check_eval_rows(rows, name)
    return rows


def _print_systems(name: str, metrics: dict) -> None:
    keys = [k for k in ("match", "em", "f1", "rouge_l", "judge", "ndcg@10", "mrr", "ndcg@10_teacher", "mrr_teacher")
            if any(k in m for m in metrics.values())]
    print(f"\n{name}: {next(iter(metrics.values()))['n']} examples")
    print(f"  {'system':<14}" + "".join(f"{k:>16}" for k in keys))
    for system, m in metrics.items():
        print(f"  {system:<14}" + "".join(f"{m[k]:>16.4f}" if k in m else f"{'':>16}" for k in keys))


RESULT_FILES = ("metrics.json", "predictions.jsonl", "table.md", "benchmarks.json")


def check_results_destination(output: str, overwrite: bool) -> None:
    """Results of an earlier evaluation in --output (top level or one folder per benchmark) need --overwrite."""
    names = list(RESULT_FILES)
    if os.path.isdir(output):
        names += [os.path.join(d, f) for d in sorted(os.listdir(output)) if os.path.isdir(os.path.join(output, d))
                  for f in RESULT_FILES[:2]]
    check_destination(output, overwrite, "--output", contents=names)


def eval_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown eval") -> int:
    args = build_parser(prog).parse_args(argv)
    from scaledown.evaluation.evaluator import SYSTEMS, check_eval_rows, evaluate_systems, write_outputs
    for flag in ("batch_size", "judge_batch_size", "num_documents", "max_examples", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be a positive integer, got {value}.")
    check_flags_apply(args.model, args, "--model")
    check_results_destination(args.output, args.overwrite)
    # everything cheap first: the models' configs, the data, retrieval (the first model's document tokens); then
    # the weights, one model at a time
    configs = [_saved_config(path, args.trust_remote_code, args) for path in args.model]
    labels = model_labels(args.model)
    saved_config = configs[0]
    model_path = args.model[0]
    num_documents = args.num_documents or saved_config.num_documents_eval
    datasets = collect_datasets(args)
    missing = [name for name, _, rows in datasets if any(not r.get("documents") for r in rows)]
    if missing:
        if not args.corpus:
            raise DataError(f"the rows of {', '.join(missing)} have no documents: pass --corpus FILE (passages, "
                            f".jsonl with title/text) to retrieve {num_documents} per query, or give rows with "
                            f"'documents'.")
        from scaledown.evaluation.retrieve import open_corpus_retriever
        tokenizer, tokenizer_name = _document_tokenizer(model_path, saved_config)
        retriever = open_corpus_retriever(args, tokenizer, tokenizer_name, saved_config.doc_max_length)
        for i, (name, source, rows) in enumerate(datasets):
            attach_documents(rows, retriever, num_documents, progress=not args.no_progress)
            kept = [r for r in rows if r["documents"]]
            if len(kept) < len(rows):
                print(f"note: {name}: {len(rows) - len(kept)} of {len(rows)} queries share no word with the corpus "
                      f"(nothing retrieved); they are left out.", flush=True)
                datasets[i] = (name, source, kept)
    for _, source, rows in datasets:  # every row scorable before the weights are loaded
        check_eval_rows(rows, source)

    import torch

    from scaledown.models import ScaleDownModel
    from scaledown.training.backends.local import resolve_device
    device = resolve_device(args.device)
    autocast = _autocast(device)
    judge = None
    if args.judge:
        from scaledown.evaluation.judge import LLMJudge
        judge = LLMJudge.load(args.judge, device, args.judge_batch_size,
                              dtype=torch.bfloat16 if device.type == "cuda" else None,
                              trust_remote_code=args.trust_remote_code)
    systems = list(SYSTEMS) if args.baselines else ["scaledown"]
    generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    several = len(args.model) > 1
    all_metrics: dict[str, dict] = {name: {} for name, _, _ in datasets}
    tflops = {} if args.benchmark and not args.no_flops else None
    for path, label in zip(args.model, labels):
        model = ScaleDownModel.from_pretrained(path, trust_remote_code=args.trust_remote_code,
                                               **base_paths(path, args)).to(device).eval()
        for name, source, rows in datasets:
            rows = _prepare_rows(rows, model.config, model.inputs.compressor_tokenizer, source, num_documents,
                                 model.inputs.tokenizer)
            result = evaluate_systems(model, rows, systems, args.batch_size, num_documents, generation, judge,
                                      progress=not args.no_progress, autocast=autocast)
            folder = os.path.join(args.output, name) if args.benchmark else args.output
            folder = os.path.join(folder, label) if several else folder   # one model: the folder as before
            predictions, metrics = write_outputs(result, folder)
            _print_systems((name if args.benchmark else source) + (f" / {label}" if several else ""), result.metrics)
            print(f"  wrote {predictions} and {metrics}")
            all_metrics[name].update({(f"{label}|{s}" if several else s): m for s, m in result.metrics.items()})
        if tflops is not None:
            from scaledown.evaluation.flops import model_tflops
            tflops.update({(f"{label}|{s}" if several else s): v
                           for s, v in model_tflops(model, num_documents=num_documents).items()})
        del model
    if several and not args.benchmark:
        for name, source, _ in datasets:   # every model side by side
            _print_systems(f"{source}: all models", all_metrics[name])
    if args.benchmark:
        metric = "judge" if judge is not None else "match"
        table = format_table(all_metrics, metric, tflops, model_name=labels[0])
        write_text(os.path.join(args.output, "table.md"), table)
        write_text(os.path.join(args.output, "benchmarks.json"),
                     json.dumps({"metrics": all_metrics, "tflops": tflops, "num_documents": num_documents,
                                 "retriever": args.retriever if missing else None,
                                 "examples": {name: len(rows) for name, _, rows in datasets}}, indent=2) + "\n")
        print("\n" + table)
        print(f"wrote {os.path.join(args.output, 'table.md')}")
    return 0
