# ScaleDownConfig: every model, data and training setting, with OSCAR's defaults and validation.
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from scaledown.atomic_files import write_json
from scaledown.config_types import check_field_types
from scaledown.errors import ConfigError
from scaledown.presets import SYNTHETIC_TASK_FIELDS, TINY_COMPRESSORS, TINY_GENERATOR, is_tiny_model, preset_values
from scaledown.prompt_text import OSCAR_SYSTEM_PROMPT  # re-exported: scaledown.config.OSCAR_SYSTEM_PROMPT
from scaledown.text_files import load_json, load_yaml

COMPRESSOR_TYPES = ("n_layers", "modernbert", "causal_lm")
DEVICE_TYPES = ("auto", "cpu", "gpu", "cuda", "trainium", "neuron")
STAGES = ("finetune", "pretrain")
DEFAULT_OUTPUT_DIR = "outputs/scaledown"   # train.py replaces it by outputs/<run name> (cli/train.py run_name)
PRETRAIN_GENERATOR_MODES = ("frozen", "lora")
PROMPT_FORMATS = ("scaledown", "oscar")
PROJECTIONS = ("none", "linear", "mlp")
SECTIONS = ("model", "data", "optim", "parallel", "run")
# What a resumed run does with a setting given on its command that differs from the checkpoint's (training/resume.py):
RESUME_KINDS = {
    "architecture": "refused before anything loads (the checkpoint's weights have another shape)",
    "run": "refused unless --allow_changed_settings is given; then listed and recorded in the run",
    "free": "taken from the command (parallel degrees, micro-batch, backend, logging, eval cadence, output)",
    "command": "never taken from a saved file: only this command's value counts (trust_remote_code)",
}

# The run's inputs besides these settings (train flags, cli/args.py): recorded with every checkpoint and resumed like a
# setting. name -> (section, resume kind). Data files are compared by content (training/resume.py fingerprints them).
RUN_INPUTS = {
    "train_data": ("data", "run"), "eval_data": ("data", "run"), "pretrain_data": ("data", "run"),
    "pretrain_eval_data": ("data", "run"), "num_train_examples": ("data", "run"),
    "num_eval_examples": ("data", "run"), "skip_bad_rows": ("data", "run"),
}
DATA_FILE_INPUTS = ("train_data", "eval_data", "pretrain_data", "pretrain_eval_data")


def _f(default: Any, help: str, *, section: str, resume: str, **kw) -> Any:
    """A dataclass field whose help text is the documentation, the CLI --help and the YAML comment.

    `section`: one of SECTIONS; `resume`: one of RESUME_KINDS. Other keywords: neuron_profile (a
    a neuron_configs/*.json profile may set it), compressor_reuse (a reused compressor brings it).
    """
    assert section in SECTIONS and resume in RESUME_KINDS, (section, resume)
    metadata = {"help": help, "section": section, "resume": resume, **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ScaleDownConfig:
    """All settings of a ScaleDown run. Defaults are OSCAR's (arXiv 2504.07109, Table 7).

    Construct with keyword arguments, `from_file(path)` (YAML or JSON), or `from_preset("tiny")`.
    Invalid or inconsistent values raise `ConfigError` naming the field and the fix.
    """

    # ---- preset ---------------------------------------------------------------------------
    preset: Optional[str] = _f(None, "Named preset applied to fields left at their default: 'tiny' "
                                     "(offline random Mistral-shaped model, CPU) or None.",
                                     section="run", resume="architecture")
    # ---- compressor -----------------------------------------------------------------------
    compressor_type: str = _f("n_layers", "Compressor family: 'n_layers' (first N generator layers, "
                                          "OSCAR-N-Layers), 'modernbert' (bidirectional encoder + projection), "
                                          "'causal_lm' (separate small causal LM + 2-layer MLP, OSCAR-llama).",
                                          section="model", resume="architecture", compressor_reuse=True)
    num_compressor_layers: int = _f(8, "Decoder layers copied from the generator for 'n_layers' (OSCAR: 5, 8 or 10).",
                                       section="model", resume="architecture")
    compressor_model_name: Optional[str] = _f(None, "Hub name or path of the separate compressor for 'modernbert' / "
                                                    "'causal_lm'. None: answerdotai/ModernBERT-base or "
                                                    "meta-llama/Llama-3.2-1B-Instruct.",
                                                    section="model", resume="architecture", compressor_reuse=True)
    compressor_mlp_hidden_dim: int = _f(8096, "Hidden width of the 2-layer ReLU MLP mapping a separate compressor "
                                              "into the generator's space (OSCAR prints 8096).",
                                              section="model", resume="architecture", compressor_reuse=True)
    num_memory_tokens: Optional[int] = _f(None, "Memory embeddings per document. None: doc_max_length // "
                                                "compression_rate (OSCAR: 128 // 16 = 8).",
                                                section="model", resume="architecture", compressor_reuse=True)
    compression_rate: Optional[int] = _f(None, "Document tokens per memory embedding. None: 16, or "
                                               "doc_max_length // num_memory_tokens when that is given.",
                                               section="model", resume="architecture")
    doc_max_length: int = _f(128, "Document tokens fed to the compressor; longer documents are truncated "
                                  "(or chunked, see long_documents). OSCAR: 128.",
                                  section="model", resume="architecture")
    query_max_length: int = _f(64, "Query tokens kept for the compressor and the generator prompt (BERGEN: 64).",
                                   section="data", resume="run")
    answer_max_length: int = _f(128, "Answer tokens trained on; the teacher wrote at most 128.",
                                     section="data", resume="run")
    long_documents: str = _f("truncate", "What to do with documents longer than doc_max_length: 'truncate' or "
                                         "'chunk' (split into several documents of doc_max_length tokens).",
                                         section="data", resume="run")
    memory_norm: bool = _f(False, "Rescale memory embeddings with a learned RMS norm initialised to the generator's "
                                  "token-embedding scale (helps small models trained from scratch).",
                                  section="model", resume="architecture", compressor_reuse=True)
    compressor_projection: Optional[str] = _f(None, "Map from compressor states to the generator's embeddings: 'none', "
                                                    "'linear' or 'mlp'. None: the family's (n_layers: none, "
                                                    "modernbert: linear, causal_lm: mlp); released OSCAR N-layers "
                                                    "models may carry an MLP (compr_use_mlp).",
                                              section="model", resume="architecture")
    # ---- generator ------------------------------------------------------------------------
    generator_model_name: str = _f("mistralai/Mistral-7B-Instruct-v0.2",
                                   "Generator causal LM (hub name or local path); OSCAR: Mistral-7B-Instruct-v0.2.",
                                   section="model", resume="architecture")
    tokenizer_name: Optional[str] = _f(None, "Tokenizer of the generator; None: the generator's.",
                                             section="model", resume="architecture")
    system_prompt: Optional[str] = _f(OSCAR_SYSTEM_PROMPT, "System message of the generator prompt "
                                                           "(OSCAR Fig. 14); None or '' for none.",
                                                           section="data", resume="run")
    trust_remote_code: bool = _f(False, "Allow hub models to run their own code. Off unless you trust the repo.",
                                        section="model", resume="command")
    lora_r: int = _f(16, "LoRA rank of the generator adapters (OSCAR: 16).",
                         section="model", resume="architecture")
    lora_alpha: int = _f(32, "LoRA alpha (OSCAR: 32 = 2r).",
                             section="model", resume="architecture")
    lora_dropout: float = _f(0.1, "LoRA dropout (OSCAR: 0.1).",
                                  section="optim", resume="run")
    lora_target_modules: str = _f("all-linear", "Generator modules given LoRA adapters; 'all-linear' "
                                                "(OSCAR) or a comma-separated list of module names.",
                                                section="model", resume="architecture")
    generator_warmup_ratio: float = _f(0.0, "Fraction of the run's steps that first fine-tune the whole generator on "
                                            "uncompressed documents, before compression training; for generators "
                                            "that cannot yet do RAG (the tiny random preset: 0.25). 0 for LLMs.",
                                            section="optim", resume="run")
    learning_rate_generator_warmup: float = _f(1e-3, "Learning rate of the generator warm-up stage.",
                                                     section="optim", resume="run")
    prompt_format: str = _f("scaledown", "Input formats of compressor and generator: 'scaledown' (this project's) or "
                                         "'oscar' (NAVER's released models, token for token: pair-encoded compressor "
                                         "input, <MEM>/<SEP> placeholders, the released system prompt; set when a "
                                         "released OSCAR folder is loaded). See scaledown/models/oscar_prompt.py.",
                            section="model", resume="architecture")
    # ---- reranking ------------------------------------------------------------------------
    enable_reranking: bool = _f(False, "Add the RR token and a dense head that scores each document, "
                                       "distilled from reranking_scores (OSCAR §3).",
                                       section="model", resume="architecture")
    reranking_loss_weight: float = _f(0.05, "lambda of lambda * MSE(score, teacher score) (OSCAR: 0.05).",
                                            section="optim", resume="run")
    # ---- data -----------------------------------------------------------------------------
    num_documents_train: int = _f(5, "Documents per query kept in training (OSCAR: top-5).",
                                     section="data", resume="run")
    num_documents_eval: int = _f(10, "Documents per query kept in evaluation (OSCAR: top-10).",
                                     section="data", resume="free")
    # ---- optimisation ---------------------------------------------------------------------
    batch_size: int = _f(128, "Global batch: examples per optimizer step over all ranks (OSCAR: 128).",
                              section="optim", resume="run")
    micro_batch_size: Optional[int] = _f(None, "Examples per rank per forward pass; accumulation = batch_size / "
                                               "(micro_batch_size x data-parallel ranks). None: min(batch_size, 8) / ranks.",
                                               section="parallel", resume="free")
    learning_rate_generator: float = _f(1e-4, "Learning rate of the generator's LoRA adapters (OSCAR: 1e-4).",
                                              section="optim", resume="run")
    learning_rate_compressor_nlayers: float = _f(5e-5, "Learning rate of the 'n_layers' compressor (OSCAR: 5e-5).",
                                                       section="optim", resume="run")
    learning_rate_compressor_llama: float = _f(1e-4, "Learning rate of the 'causal_lm' compressor and MLP (OSCAR: 1e-4).",
                                                     section="optim", resume="run")
    learning_rate_compressor_modernbert: float = _f(1e-4, "Learning rate of the 'modernbert' compressor and projection.",
                                                          section="optim", resume="run")
    weight_decay: float = _f(0.1, "AdamW weight decay (OSCAR: 0.1).",
                                  section="optim", resume="run")
    adam_beta1: float = _f(0.9, "AdamW beta1 (first-moment decay).",
                                section="optim", resume="run")
    adam_beta2: float = _f(0.999, "AdamW beta2 (second-moment decay).",
                                  section="optim", resume="run")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon (denominator floor).",
                                   section="optim", resume="run")
    warmup_ratio: float = _f(0.05, "Fraction of steps with linear learning-rate warmup (OSCAR: 0.05).",
                                   section="optim", resume="run")
    lr_scheduler: str = _f("linear", "Learning-rate decay after warmup: 'linear' (OSCAR), 'cosine' or 'constant'.",
                                     section="optim", resume="run")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (OSCAR: 1.0); 0 disables clipping.",
                                   section="optim", resume="run")
    num_epochs: float = _f(1.0, "Passes over the training data (OSCAR: 1); ignored when max_steps > 0.",
                                section="optim", resume="run")
    max_steps: int = _f(-1, "Optimizer steps to run; -1: num_epochs over the data.",
                            section="optim", resume="run")
    gradient_checkpointing: bool = _f(True, "Recompute activations in backward to save memory.",
                                            section="parallel", resume="free")
    use_bf16: bool = _f(True, "bfloat16 autocast where the device supports it.",
                              section="optim", resume="run")
    use_fp16: bool = _f(False, "float16 autocast with loss scaling (GPUs without bf16).",
                               section="optim", resume="run")
    seed: int = _f(42, "Random seed for weights, data order and dropout.",
                       section="run", resume="run")
    shuffle_data: bool = _f(True, "Shuffle the training rows every epoch; false keeps their order (curricula, "
                                  "such as the built-in synthetic data).",
                                  section="data", resume="run")
    dataloader_num_workers: int = _f(-1, "Processes that collate training batches ahead of the step (torch DataLoader "
                                         "workers, pinned memory on GPUs); 0: in the training process; -1: auto (2 on "
                                         "an accelerator, 0 on CPU, where workers would take cores from the step).",
                                         section="data", resume="free")
    # ---- parallelism (NeuronX Distributed backend; neuron_configs/*.json set them per profile) --------------
    tensor_parallel_size: int = _f(1, "NxD tensor-parallel degree (--tp): must divide the ranks, the attention heads, "
                                      "the MLP width and the vocabulary. Trn1: 8 or 32 per node.",
                                      section="parallel", resume="free", neuron_profile=True)
    pipeline_parallel_size: int = _f(1, "NxD pipeline-parallel degree (--pp): the compressor's and generator's decoder "
                                        "layers are split into this many stages (NxD auto-partition).",
                                        section="parallel", resume="free", neuron_profile=True)
    pipeline_schedule: str = _f("1f1b", "Torch backend under --pp > 1: the schedule of each step's micro-batches, "
                                        "'1f1b' (one forward, one backward; needs at least --pp micro-batches a "
                                        "step) or 'gpipe' (all forwards, then all backwards: more activation memory).",
                                        section="parallel", resume="free")
    data_parallel_replicate_size: int = _f(1, "Torch backend: HSDP replicas; the ranks are replicas x shards, each "
                                              "replica shards every weight over its ranks with FSDP2 (e.g. the nodes "
                                              "x the GPUs per node). 1: plain FSDP2 over all ranks.",
                                              section="parallel", resume="free")
    num_microbatches: Optional[int] = _f(None, "Pipeline micro-batches per optimizer step on each data-parallel rank; "
                                               "None: the accumulation steps (batch_size / micro_batch_size / DP). "
                                               "Must divide the per-rank batch.",
                                               section="parallel", resume="free", neuron_profile=True)
    zero1: bool = _f(True, "NxD ZeRO-1: shard optimizer states over data-parallel ranks (fp32 master weights "
                           "under bf16).",
                           section="parallel", resume="free", neuron_profile=True)
    sequence_parallel: bool = _f(False, "NxD sequence parallelism for norms and dropout (needs tensor_parallel_size > 1).",
                                        section="parallel", resume="free", neuron_profile=True)
    kv_replication: Optional[int] = _f(None, "NxD kv_size_multiplier: copies of each key/value head so they cover the "
                                             "tensor-parallel ranks; None: the smallest valid factor.",
                                             section="parallel", resume="free", neuron_profile=True)
    # ---- run ------------------------------------------------------------------------------
    stage: str = _f("finetune", "'finetune' (distillation on query/documents/answer rows) or 'pretrain' "
                                "(compressor auto-encoding + continuation on plain text).",
                                section="run", resume="run")
    pretrain_autoencoding_ratio: float = _f(0.5, "Stage pretrain: share of examples that are auto-encoding (the "
                                                 "generator reproduces the compressed chunk); the rest are "
                                                 "continuation (it writes the text that follows). OSCAR/PISCO: 0.5.",
                                                 section="data", resume="run")
    pretrain_generator: str = _f("frozen", "Stage pretrain: what of the generator trains beside the compressor: "
                                           "'frozen' (nothing: the compressor learns to feed the plain generator, so "
                                           "it can be reused with a fresh LoRA) or 'lora' (its LoRA adapters too, "
                                           "as COCOM does).",
                                           section="optim", resume="run")
    device_type: str = _f("auto", "'auto' (GPU if present, else CPU), 'gpu', 'cpu', 'trainium' (Trn1, NxD "
                                  "backend) or 'neuron' (TorchNeuron on Trn2/Trn3, torch backend; untested on hardware).",
                                  section="parallel", resume="free")
    output_dir: str = _f(DEFAULT_OUTPUT_DIR, "Run folder: final/ (Hugging Face), checkpoints/, runs/ (TensorBoard). "
                                             "Unset on the command line: outputs/<run name> (the data file's name).",
                                          section="run", resume="free")
    logging_steps: int = _f(10, "Optimizer steps between TensorBoard/console logs.",
                                section="run", resume="free")
    eval_steps: int = _f(0, "Optimizer steps between evaluations on the eval set; 0: only at the end.",
                            section="run", resume="free")
    save_steps: int = _f(500, "Optimizer steps between checkpoints; 0: only at the end.",
                              section="run", resume="free")
    save_total_limit: int = _f(3, "Checkpoints kept; older ones are deleted once a newer one is complete.",
                                  section="run", resume="free")
    eval_max_examples: int = _f(200, "Eval examples scored by generation at each evaluation.",
                                     section="run", resume="free")
    max_new_tokens: int = _f(32, "Tokens generated per answer in evaluation.",
                                 section="run", resume="free")

    # ------------------------------------------------------------------------------------------
    def __new__(cls, *args: Any, **kwargs: Any) -> "ScaleDownConfig":
        # remember which fields the caller passed: a preset fills only the others, even where a passed value equals
        # the default (ScaleDownConfig(preset="tiny", num_compressor_layers=8) keeps 8)
        self = super().__new__(cls)
        self._given = frozenset(kwargs) | frozenset(f.name for f, _ in zip(fields(cls), args))
        return self

    def __post_init__(self) -> None:
        check_field_types(self)   # before any arithmetic on the values (see config_types.py for the policy)
        self.preset_fields = frozenset()  # fields whose value the preset gave (not a dataclass field)
        if self.preset is not None:   # the one place a preset is applied (from_dict and files come here too)
            applied = preset_values(self.preset, getattr(self, "_given", frozenset()))
            for key, value in applied.items():
                setattr(self, key, value)
            self.preset_fields = frozenset(applied)
        self._resolve_compression()
        self._absolute_model_paths()
        self.validate()

    def _absolute_model_paths(self) -> None:
        """A base model given as a relative local folder is recorded by its absolute path, so a saved model or run
        loads from any working directory (hub ids and the tiny sentinel names stay as given)."""
        for name in MODEL_PATH_FIELDS:
            setattr(self, name, local_model_path(getattr(self, name)))

    def _resolve_compression(self) -> None:
        if self.num_memory_tokens is None and self.compression_rate is None:
            self.compression_rate = 16
        if self.num_memory_tokens is None:
            _check(self.compression_rate >= 1, "compression_rate", self.compression_rate, "use a positive integer such as 16")
            self.num_memory_tokens = self.doc_max_length // self.compression_rate
        elif self.compression_rate is None:
            _check(self.num_memory_tokens >= 1, "num_memory_tokens", self.num_memory_tokens, "use a positive integer such as 8")
            self.compression_rate = self.doc_max_length // self.num_memory_tokens

    def validate(self) -> None:
        """Raise ConfigError on the first invalid or inconsistent value (wrong types first, naming the field)."""
        check_field_types(self)
        _check_choice("compressor_type", self.compressor_type, COMPRESSOR_TYPES)
        _check_choice("device_type", self.device_type, DEVICE_TYPES)
        _check_choice("stage", self.stage, STAGES)
        _check_choice("pretrain_generator", self.pretrain_generator, PRETRAIN_GENERATOR_MODES)
        _check(isinstance(self.pretrain_autoencoding_ratio, (int, float)) and 0 <= self.pretrain_autoencoding_ratio <= 1,
               "pretrain_autoencoding_ratio", self.pretrain_autoencoding_ratio,
               "use a share in [0, 1]: 1 only auto-encoding, 0 only continuation (OSCAR/PISCO: 0.5)")
        _check_choice("lr_scheduler", self.lr_scheduler, ("linear", "cosine", "constant"))
        _check_choice("pipeline_schedule", self.pipeline_schedule, ("1f1b", "gpipe"))
        _check_choice("long_documents", self.long_documents, ("truncate", "chunk"))
        _check_choice("prompt_format", self.prompt_format, PROMPT_FORMATS)
        if self.compressor_projection is not None:
            _check_choice("compressor_projection", self.compressor_projection, PROJECTIONS)
        for name in ("doc_max_length", "query_max_length", "answer_max_length", "num_memory_tokens",
                     "compression_rate", "batch_size", "lora_r", "lora_alpha", "num_documents_train",
                     "num_documents_eval", "logging_steps", "max_new_tokens", "compressor_mlp_hidden_dim"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
                   "use a positive integer")
        if self.num_memory_tokens * self.compression_rate != self.doc_max_length:
            raise ConfigError(
                f"num_memory_tokens ({self.num_memory_tokens}) x compression_rate ({self.compression_rate}) = "
                f"{self.num_memory_tokens * self.compression_rate}, but doc_max_length is {self.doc_max_length}. "
                f"Set only one of them (the other is derived), e.g. compression_rate="
                f"{max(1, self.doc_max_length // self.num_memory_tokens)} for {self.num_memory_tokens} memory tokens, "
                f"and make doc_max_length a multiple of it.")
        if self.compressor_type == "n_layers":
            _check(isinstance(self.num_compressor_layers, int) and self.num_compressor_layers >= 1,
                   "num_compressor_layers", self.num_compressor_layers, "use 1 or more layers (OSCAR: 5, 8 or 10)")
        for name in ("learning_rate_generator", "learning_rate_compressor_nlayers", "learning_rate_compressor_llama",
                     "learning_rate_compressor_modernbert", "learning_rate_generator_warmup"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 1, name, value,
                   "use a positive learning rate below 1, e.g. 1e-4")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "use a value in [0, 1), e.g. 0.1")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "use a value in [0, 1), e.g. 0.05")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "use 0 or a positive value, e.g. 0.1")
        _check(self.dataloader_num_workers >= -1, "dataloader_num_workers", self.dataloader_num_workers,
               "use -1 (auto), 0 (collate in the training process) or a number of worker processes")
        _check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "use 0 (off) or a positive norm, e.g. 1.0")
        _check(math.isfinite(self.reranking_loss_weight) and self.reranking_loss_weight >= 0,
               "reranking_loss_weight", self.reranking_loss_weight, "use 0 or a positive weight, e.g. 0.05")
        _check(self.num_epochs > 0, "num_epochs", self.num_epochs, "use a positive number of epochs")
        _check(isinstance(self.max_steps, int) and (self.max_steps == -1 or self.max_steps >= 1), "max_steps",
               self.max_steps, "use -1 (epochs decide) or a positive step count")
        _check(0 <= self.generator_warmup_ratio < 1, "generator_warmup_ratio", self.generator_warmup_ratio,
               "use a fraction in [0, 1), e.g. 0.25 (the rest of the steps train compression)")
        for name in ("eval_steps", "save_steps", "save_total_limit", "eval_max_examples"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name, getattr(self, name),
                   "use 0 or a positive integer")
        if self.micro_batch_size is not None:
            _check(isinstance(self.micro_batch_size, int) and self.micro_batch_size >= 1, "micro_batch_size",
                   self.micro_batch_size, "use a positive integer or leave it unset")
            _check(self.micro_batch_size <= self.batch_size, "micro_batch_size", self.micro_batch_size,
                   f"it cannot exceed batch_size ({self.batch_size})")
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
                   "use a positive integer (1 turns that parallelism off)")
        for name in ("num_microbatches", "kv_replication"):
            value = getattr(self, name)
            if value is not None:
                _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
                       "use a positive integer or leave it unset")
        if self.sequence_parallel and self.tensor_parallel_size == 1:
            raise ConfigError("sequence_parallel=True needs tensor_parallel_size > 1 (it splits activations over the "
                              "tensor-parallel ranks). Set --tensor_parallel_size or --sequence_parallel false.")
        if self.use_bf16 and self.use_fp16:
            raise ConfigError("use_bf16 and use_fp16 are both on. Choose one: --use_fp16 false (bf16, the "
                              "default on GPUs that support it) or --use_bf16 false.")

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        write_json(path, self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config", user_data: bool = False) -> "ScaleDownConfig":
        """Build from a mapping; values given explicitly win over the preset's (even when equal to a default).

        user_data=True (a run on the user's files): the preset's synthetic-task schedule and lengths are not
        applied (presets.SYNTHETIC_TASK_FIELDS). `config.preset_fields` names the fields the preset set."""
        values = dict(values)
        unknown = [k for k in values if k not in cls.field_names()]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, cls.field_names(), n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ConfigError(f"{source}: unknown setting {', '.join(hints)}. "
                              f"Valid settings are the ScaleDownConfig fields (see `python train.py --help`).")
        if values.get("preset") is not None and user_data:   # the synthetic task's schedule and lengths keep
            defaults = {f.name: _default_of(f) for f in fields(cls)}   # their defaults: given, so not preset
            values = {**{k: defaults[k] for k in SYNTHETIC_TASK_FIELDS}, **values}
        return cls(**values)

    @classmethod
    def from_file(cls, path: str, **overrides: Any) -> "ScaleDownConfig":
        """Load YAML (.yaml/.yml) or JSON; keyword overrides win over the file."""
        return cls.from_dict({**read_config_file(path), **overrides}, source=path)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ScaleDownConfig":
        return cls.from_dict({"preset": name, **overrides}, source=f"preset {name}")

    # ---- derived values -----------------------------------------------------------------------
    def generator_warmup_steps(self, total_steps: int) -> int:
        """Steps of the generator warm-up within a run of `total_steps` (the rest train compression; in stage
        pretrain the warm-up reads the chunks as text, so a random generator learns to repeat and continue)."""
        if self.generator_warmup_ratio <= 0 or total_steps < 2:
            return 0
        return min(total_steps - 1, max(1, round(total_steps * self.generator_warmup_ratio)))

    @property
    def compressor_learning_rate(self) -> float:
        return {"n_layers": self.learning_rate_compressor_nlayers,
                "causal_lm": self.learning_rate_compressor_llama,
                "modernbert": self.learning_rate_compressor_modernbert}[self.compressor_type]

    @property
    def base_is_random(self) -> bool:
        """Whether the base generator is an offline random sentinel (the tiny preset's), built from a config with
        random weights rather than loaded: its weights exist only in this run's checkpoints and saved folders."""
        return is_tiny_model(self.generator_model_name)

    @property
    def resolved_compressor_model_name(self) -> Optional[str]:
        if self.compressor_type == "n_layers":
            return None
        if self.compressor_model_name:
            return self.compressor_model_name
        if self.generator_model_name == TINY_GENERATOR:  # tiny generator: tiny offline compressor too
            return TINY_COMPRESSORS[self.compressor_type]
        return {"modernbert": "answerdotai/ModernBERT-base",
                "causal_lm": "meta-llama/Llama-3.2-1B-Instruct"}[self.compressor_type]

    @property
    def compressor_tokenizer_name(self) -> str:
        """Tokenizer of the text the compressor reads: the separate compressor's, else the generator's."""
        if self.compressor_type == "n_layers":
            return self.tokenizer_name or self.generator_model_name
        return self.resolved_compressor_model_name


MODEL_PATH_FIELDS = ("generator_model_name", "compressor_model_name", "tokenizer_name")


def local_model_path(value: Any) -> Any:
    """A relative path to an existing local folder -> its absolute path; a hub id, a tiny sentinel name, None or an
    absolute path unchanged. How a config records a base model (and how a recorded one is compared)."""
    if isinstance(value, str) and value and not os.path.isabs(value) and os.path.isdir(value):
        return os.path.abspath(value)
    return value


def fields_where(**wanted: Any) -> tuple[str, ...]:
    """Names of the ScaleDownConfig fields whose metadata has all the `wanted` values, in field order."""
    return tuple(f.name for f in fields(ScaleDownConfig)
                 if all(f.metadata.get(key) == value for key, value in wanted.items()))


def field_meta(name: str, key: str) -> Any:
    return next(f.metadata.get(key) for f in fields(ScaleDownConfig) if f.name == name)


# Fields that define the model's architecture and weights (a saved model keeps them; a checkpoint must match them).
MODEL_FIELDS = frozenset(fields_where(section="model", resume="architecture"))


def config_from_saved(values: dict[str, Any], source: str, trust_remote_code: bool = False) -> ScaleDownConfig:
    """A config read back from a saved file (a model folder, a checkpoint, a converter's metadata).

    A saved `trust_remote_code: true` is ignored, with a note: remote code runs only when the caller asks on this
    command or call (`--trust_remote_code`, `from_pretrained(..., trust_remote_code=True)`). Settings this version
    does not know are dropped; the saved values are already resolved, so the preset is not applied again.
    """
    values = {k: v for k, v in values.items() if k in ScaleDownConfig.field_names() and k != "preset"}
    if values.pop("trust_remote_code", False) and not trust_remote_code:
        warnings.warn(f"{source} records trust_remote_code=true; ignored. Remote code runs only when you pass "
                      f"--trust_remote_code (or trust_remote_code=True) yourself.", UserWarning, stacklevel=2)
    values["trust_remote_code"] = bool(trust_remote_code)
    return ScaleDownConfig.from_dict(values, source=source)


def read_config_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist. Pass --config with a YAML or JSON file.")
    if path.endswith((".yaml", ".yml")):
        values = load_yaml(path, ConfigError)
    else:
        values = load_json(path, ConfigError)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value, not {type(values).__name__}.")
    return values


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def field_help(name: str) -> str:
    return next(f.metadata.get("help", "") for f in fields(ScaleDownConfig) if f.name == name)


def _check(ok: bool, name: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {fix}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}.{hint}")
