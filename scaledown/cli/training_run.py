# The run a train command describes: its config (new or resumed), data, model and trainer; every launcher's core.
from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from typing import Callable, Optional, Sequence

from scaledown.atomic_files import write_json
from scaledown.cli.args import config_from_args, explicit_settings
from scaledown.cli.oscar_base_flags import base_paths, check_flags_apply
from scaledown.config import DEFAULT_OUTPUT_DIR, MODEL_FIELDS, RUN_INPUTS
from scaledown.data.pretraining import load_pretraining_data
from scaledown.data.reranking_check import check_reranking_scores, has_reranking_scores
from scaledown.data.synthetic import builtin_training_rows, generate_examples
from scaledown.errors import ConfigError
from scaledown.presets import SYNTHETIC_TASK_FIELDS
from scaledown.training import resume, run_folder, tags
from scaledown.training.run_folder import SUMMARY_FILE

logger = logging.getLogger("scaledown.cli.train")   # the name users and tests filter on


def check_stage_flags(config, args) -> None:
    """Data and init flags that do not fit the stage fail before anything loads."""
    if config.stage == "pretrain" and args.train_data:
        raise ConfigError("--train_data holds question-answering rows for fine-tuning; --stage pretrain reads plain "
                          "text: pass it with --pretrain_data (or drop --stage pretrain).")
    if config.stage == "finetune" and (args.pretrain_data or args.pretrain_eval_data):
        raise ConfigError("--pretrain_data / --pretrain_eval_data are plain text for the pretraining stage: add "
                          "--stage pretrain, or fine-tune with --train_data.")
    if args.init_from and args.init_compressor_from:
        raise ConfigError("--init_from (the whole model) and --init_compressor_from (only its compressor) exclude "
                          "each other; pass one.")


def load_datasets(config, args, backend_is_main: bool = True):
    """Training and eval datasets: the user's files, the built-in synthetic task (a curriculum, kept in order),
    or plain text for stage pretrain."""
    from scaledown.data import ScaleDownDataset

    if config.stage == "pretrain":
        from scaledown.models import loading
        name = config.compressor_tokenizer_name
        return load_pretraining_data(config, loading.load_tokenizer(name, config.trust_remote_code), name,
                                     source=args.pretrain_data, eval_source=args.pretrain_eval_data,
                                     is_main=backend_is_main, skip_bad_rows=args.skip_bad_rows,
                                     num_rows=args.num_train_examples)
    if args.train_data:
        train = ScaleDownDataset(args.train_data, config)
        check_reranking_scores(config, train)
        evaluation = (ScaleDownDataset(args.eval_data, config, num_documents=config.num_documents_eval)
                      if args.eval_data else None)
        return train, evaluation
    rows = builtin_training_rows(config)
    if args.num_train_examples:
        rows = rows[:args.num_train_examples]
    train = ScaleDownDataset(rows, config)
    evaluation = (ScaleDownDataset(args.eval_data, config, num_documents=config.num_documents_eval) if args.eval_data else
                  ScaleDownDataset(generate_examples(args.num_eval_examples, seed=config.seed + 10_000), config))
    return train, evaluation


def train_config(args):
    """The run's config from the train flags (every launcher), before anything heavy loads.

    A resumed run (--resume_from) takes its settings and data from the checkpoint (training/resume.py decides what a
    flag may change). A new run: the tiny preset without data files; a compressor reused with --init_compressor_from
    brings its architecture, unless flags or --config say otherwise; an --output_dir holding another run is refused
    unless --overwrite_output_dir. Sets args.<data flags> to the run's inputs and args.run_record / args.resume_path.
    """

    if args.resume_from is not None and args.overwrite_output_dir:
        raise ConfigError("--resume_from continues a run and --overwrite_output_dir starts one over; pass one of them.")
    check_flags_apply([args.init_from], args, "--init_from")
    if args.allow_changed_settings and args.resume_from is None:
        raise ConfigError("--allow_changed_settings only applies with --resume_from (it lets a resumed run change "
                          "settings that define it); drop it for a new run.")
    explicit = explicit_settings(args)
    given = {k: getattr(args, k) for k in RUN_INPUTS if getattr(args, k, None) is not None}
    output_dir = (explicit.get("output_dir") or resume.run_dir_of(args.resume_from)
                  or os.path.join("outputs", run_name(explicit.get("stage", "finetune"), explicit.get("preset"), args)))
    path = resume.locate(args.resume_from, output_dir)
    changes: list = []
    if path:
        resumed = resume.resume_run(path, explicit, given, args.allow_changed_settings,
                                    fresh=lambda recorded: _new_run_config(args, recorded))
        config, inputs = resumed.config, resumed.inputs
        changes = list(resumed.state.get("changed_settings", []))
        changes += [{"step": resumed.state["step"], **c} for c in resumed.changes]
        if os.environ.get("RANK", "0") == "0":
            for note in resumed.notes:
                print(note, flush=True)
    else:
        config = _new_run_config(args)
        inputs = {k: given.get(k, resume.RUN_INPUT_DEFAULTS.get(k)) for k in RUN_INPUTS}
        if not getattr(args, "dry_run", False):
            run_folder.check_new_run(config.output_dir, args.overwrite_output_dir)
    if path and config.prompt_format == "oscar" and not args.init_from:
        raise ConfigError(f"{path} belongs to a run started from a released OSCAR model (or one converted from it: "
                          f"prompt_format oscar); its checkpoints resume onto that model's structure (grown "
                          f"vocabulary, added tokens). Pass the --init_from folder the run started from again (with "
                          f"its --generator_path / --compressor_path): --resume_from {args.resume_from} --init_from "
                          f"FOLDER.")
    for name, value in inputs.items():
        setattr(args, name, value)
    args.resume_path = path
    args.run_record = resume.run_record(inputs, changes)
    return config


def _new_run_config(args, recorded: Optional[dict] = None):
    """A new run's config from the flags; `recorded`: settings under the flags (those a converted or older
    checkpoint recorded)."""
    base = None
    if args.init_compressor_from:
        from scaledown.models.compressor_reuse import read_saved_compressor
        base = read_saved_compressor(args.init_compressor_from).architecture()
    elif args.init_from:
        base = init_architecture(args) or None
    if recorded:
        base = {**(base or {}), **recorded}
    real_data = bool(args.train_data or args.pretrain_data)
    builtin = not real_data and explicit_settings(args).get("stage", "finetune") != "pretrain"
    unless_flagged = {"shuffle_data": False} if builtin else {}   # the built-in curriculum's order

    def settle(decided):   # the config is built whole with what was decided, never patched once validated
        return config_from_args(args, default_preset=None if real_data else "tiny", base=base, user_data=real_data,
                                unless_flagged={**unless_flagged, **decided})

    config, decided = settle({}), {}
    defaulted = [k for k in SYNTHETIC_TASK_FIELDS if k not in explicit_settings(args)]  # not the user's own values
    if real_data and config.preset and defaulted:
        logger.warning("preset %s with your own data: %s keep their defaults (the preset's values belong to its "
                       "built-in synthetic task); set them with flags if you want others.", config.preset,
                       ", ".join(f"{k}={getattr(config, k)}" for k in defaulted))
    if args.train_data and config.enable_reranking and "enable_reranking" in config.preset_fields:
        if not has_reranking_scores(args.train_data):   # the preset's reranking would have nothing to learn from
            decided["enable_reranking"] = False
            logger.warning("%s: no row has reranking_scores, so reranking (turned on by preset %s) is off for this "
                           "run. Add reranking_scores to the rows to train the reranking head.", args.train_data,
                           config.preset)
    if args.init_from and config.generator_warmup_ratio > 0 and _warmup_discards_compressor(args.init_from):
        if "generator_warmup_ratio" in explicit_settings(args):
            raise ConfigError(f"--generator_warmup_ratio {config.generator_warmup_ratio} with --init_from "
                              f"{args.init_from}: after the warm-up the N-layers compressor restarts from the "
                              f"generator's layers, which would discard the trained compressor loaded from that "
                              f"folder (and a released model's generator is already trained for RAG). Pass "
                              f"--generator_warmup_ratio 0.")
        decided["generator_warmup_ratio"] = 0.0   # the preset's warm-up is for random generators, not a trained one
        logger.warning("--init_from %s: no generator warm-up (the %s preset's would restart the trained compressor "
                       "from the generator's layers).", args.init_from, config.preset)
    if config.output_dir == DEFAULT_OUTPUT_DIR:   # not chosen: one folder per run name, never ./checkpoints/checkpoints
        decided["output_dir"] = os.path.join("outputs", run_name(config.stage, config.preset, args))
    return settle(decided) if decided else config


def _warmup_discards_compressor(folder: str) -> bool:
    """Whether a generator warm-up would throw away the compressor of --init_from `folder`: a released OSCAR folder
    (its generator is trained; an N-layers compressor would be recopied) or a ScaleDown folder with an N-layers
    compressor (trainer._enter recopies the generator's first layers after the warm-up)."""
    from scaledown.models.oscar_format import is_released_folder
    if is_released_folder(folder):
        return True
    try:
        from scaledown.models.serialization import read_saved_config
        return read_saved_config(folder)[2].compressor_type == "n_layers"
    except Exception:   # not a model folder (an NxD checkpoint): its own loader reports what is wrong
        return False


def init_architecture(args) -> dict:
    """Model settings of a released OSCAR --init_from folder, so that the run's config describes the model it trains:
    every backend checks, plans, shards and exports from the config (NxD builds its layout and final/ from it). Its
    base models are resolved now (--generator_path / --compressor_path, else its hub ids), before any data or weights
    load; enable_reranking stays the run's (a released model has no head: a fresh one is added). {} for any other
    folder (a ScaleDown folder keeps its own settings in from_pretrained; NxD describes it from the folder)."""
    from scaledown.models.oscar_format import is_released_folder, released_config
    if not is_released_folder(args.init_from):
        return _saved_prompt(args.init_from)
    saved = released_config(args.init_from, args.generator_path, args.compressor_path, check=True)
    keep = (MODEL_FIELDS - {"enable_reranking"}) | {"system_prompt"}   # the released prompt, token for token
    values = {k: v for k, v in saved.to_dict().items() if k in keep}
    if "preset" not in explicit_settings(args) and not (args.train_data or args.pretrain_data):
        values["preset"] = "tiny"   # the built-in task's schedule, as without --init_from (the folder's model wins)
    return values


def _saved_prompt(folder: str) -> dict:
    """The system prompt a ScaleDown --init_from folder was trained with (e.g. the released prompt of a `convert
    --from oscar` copy): the run keeps it unless --system_prompt says otherwise, as it keeps the folder's model."""
    from scaledown.models.serialization import read_saved_config
    try:
        saved = read_saved_config(folder)[2]
    except Exception:   # not a model folder (an NxD checkpoint): its own loader reports what is wrong
        return {}
    return {"system_prompt": saved.system_prompt}


def run_name(stage: str, preset, args) -> str:
    """Default run folder name under ./outputs: the data file's name ('mine' for mine.jsonl), or 'tiny-synthetic'
    / 'pretrain-synthetic' for the built-in data; pretraining runs start with 'pretrain-'."""
    source = args.pretrain_data if stage == "pretrain" else args.train_data
    if source:
        name = os.path.basename(os.path.normpath(source))
        for suffix in (".gz", ".jsonl", ".json", ".parquet"):
            name = name[:-len(suffix)] if name.endswith(suffix) else name
    else:
        name = f"{preset or 'tiny'}-synthetic"   # no data files: the tiny preset's built-in task
    return f"pretrain-{name}" if stage == "pretrain" else name


def _python() -> str:
    """This run's interpreter as the user can type it: 'python' where that is it, else its path (relative to the
    current folder when inside it, e.g. .venv/bin/python after the README's install, which activates nothing)."""
    found = shutil.which("python")
    if found and os.path.abspath(found) == os.path.abspath(sys.executable):
        return "python"
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative


def resume_command(prog: str, config, backend, launcher_flags: Sequence[str] = ()) -> str:
    """The command that continues this run (printed when SIGTERM / Ctrl-C stop it)."""
    if backend.world_size > 1:   # `scaledown train` under torchrun: its module, as torchrun starts no console script
        head = ["torchrun", f"--nproc_per_node={backend.world_size}",
                *([prog] if prog.endswith(".py") else ["-m", "scaledown.cli.main", *prog.split()[1:]])]
    else:
        head = [_python(), prog] if prog.endswith(".py") else prog.split()
    return shlex.join([*head, *launcher_flags, "--resume_from", "auto", "--output_dir", config.output_dir])


def run_training(config, args, backend_factory: Callable, prog: str = "train.py",
                 launcher_flags: Sequence[str] = ()) -> int:
    from scaledown.models import ScaleDownModel
    from scaledown.training import ScaleDownTrainer

    check_stage_flags(config, args)
    backend = backend_factory(config)
    train, evaluation = load_datasets(config, args, backend.is_main)
    if args.init_from:
        overrides = {**_init_overrides(config, args.init_from), **base_paths(args.init_from, args)}
        model = backend.build_model(lambda: ScaleDownModel.from_pretrained(args.init_from, **overrides).train())   # from_pretrained gives eval mode
    elif args.init_compressor_from:
        model = backend.build_model(lambda: ScaleDownModel.with_pretrained_compressor(args.init_compressor_from, config))
    else:
        model = backend.build_model(lambda: ScaleDownModel(config))
    trainer = ScaleDownTrainer(model, config, train, evaluation, backend=backend, resume_from=args.resume_path,
                               allow_changed_settings=args.allow_changed_settings,
                               overwrite_output_dir=args.overwrite_output_dir, run_record=args.run_record,
                               resume_command=resume_command(prog, config, backend,
                                                             [*launcher_flags, *_init_flags(args)]),
                               progress=not args.no_progress)
    result = trainer.train()
    if backend.is_main:
        summary = {"steps": result.steps, "interrupted": result.interrupted, "train_seconds": result.train_seconds,
                   "eval_before": result.eval_before, "eval_after": result.eval_after, "final_dir": result.final_dir}
        os.makedirs(config.output_dir, exist_ok=True)
        write_json(os.path.join(config.output_dir, SUMMARY_FILE), summary, indent=2)
        if result.eval_before and result.eval_after:
            what = ("reconstruction accuracy (held-out chunk tokens, teacher-forced)" if config.stage == "pretrain"
                    else "accuracy (answer contained in output)")
            tag = tags.RECONSTRUCTION_ACCURACY if config.stage == "pretrain" else tags.EVAL_ACCURACY
            if tag not in result.eval_after:   # no answers generated (pipeline stages, --eval_max_examples 0)
                what, tag = "eval loss (no answers were generated)", tags.EVAL_LOSS
            before, after = result.eval_before.get(tag, 0.0), result.eval_after.get(tag, 0.0)
            print(f"held-out {what}, {len(evaluation)} examples: before {before:.3f} -> after {after:.3f}", flush=True)
    backend.close()
    if not result.interrupted:
        return 0
    return 130 if trainer.stopped_by == "SIGINT" else 143   # the shell's codes for Ctrl-C and SIGTERM


def _init_flags(args) -> list[str]:
    """--init_from and its base-model flags, for the resume command: a run from a released OSCAR folder (or its
    conversion) resumes onto the model that folder builds."""
    flags = ["--init_from", args.init_from] if args.init_from else []
    for name in ("generator_path", "compressor_path"):
        if args.init_from and getattr(args, name, None):
            flags += [f"--{name}", getattr(args, name)]
    return flags


def _init_overrides(config, init_from: str = "") -> dict:
    """Training settings of this run override what the saved model folder recorded. A released OSCAR folder has
    no reranking head: this run's enable_reranking decides whether a fresh one is added."""
    from scaledown.models.oscar_format import is_released_folder
    released = {"enable_reranking"} if init_from and is_released_folder(init_from) else set()
    return {k: v for k, v in config.to_dict().items() if (k not in MODEL_FIELDS or k in released) and k != "preset"}
