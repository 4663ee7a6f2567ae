# `scaledown convert`: command line of the checkpoint converters (Hugging Face, DeepSpeed ZeRO-3, NxD TP/PP, DCP).
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from scaledown.checkpoint.formats import FORMATS
from scaledown.cli.args import FriendlyParser
from scaledown.cli.oscar_base_flags import add_base_model_flags


def _description() -> str:
    """One line per format of the table (checkpoint/formats.py)."""
    width = max(len(name) for name in FORMATS) + 2
    lines = [f"  {name:<{width}}{fmt.help}" for name, fmt in FORMATS.items()]
    return ("Convert a ScaleDown checkpoint between formats:\n" + "\n".join(lines) + "\nWeights always convert; "
            "Adam moments and the step carry between deepspeed, nxd and dcp; a Hugging Face folder\nholds no "
            "optimizer state.")


DESCRIPTION = _description()

EXAMPLES = """examples:
  scaledown convert --from hf --to nxd runs/tiny/final ckpt_trn1 --tp 8 --pp 4
  scaledown convert --from deepspeed --to nxd runs/gpu/checkpoints/step_0001000 ckpt_trn1 --tp 32 --pp 8 --xser
  scaledown convert --from nxd --to hf ckpt_trn1 exported_model --merge_lora
  scaledown convert --from deepspeed --to deepspeed runs/gpu/checkpoints/step_0001000 runs/one_gpu/checkpoints
  scaledown convert --from dcp --to hf runs/torch/checkpoints/step_0001000 exported_model
  scaledown convert --from deepspeed --to dcp runs/gpu/checkpoints/step_0001000 runs/torch/checkpoints
  scaledown convert --from oscar --to hf oscar-qwen2-7B my_oscar --generator_path /models/Qwen2-7B-Instruct
  scaledown convert --from hf --to oscar runs/gpu/final released_layout"""


def build_parser(prog: str) -> FriendlyParser:
    p = FriendlyParser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src_format", required=True, choices=tuple(FORMATS), help="format of SRC")
    p.add_argument("--to", dest="dst_format", required=True, choices=tuple(FORMATS), help="format to write at DST")
    p.add_argument("src", metavar="SRC", help="checkpoint to read")
    p.add_argument("dst", metavar="DST", help="folder to write (nxd / deepspeed / dcp: DST/TAG is created)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree of the NxD output (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel degree of the NxD output (default 1)")
    p.add_argument("--kv_replication", "--kv-replication", type=int, default=None,
                   help="NxD kv_size_multiplier; default: the smallest factor making the KV heads divide --tp")
    p.add_argument("--xser", action="store_true", help="write NxD shards in torch-xla's xser format (default off)")
    p.add_argument("--zero1_dp", "--zero1-dp", type=int, default=None,
                   help="nxd output: write the optimizer in NxD's ZeRO-1 layout, one file per data-parallel rank, for "
                        "this many data-parallel ranks (what a --zero1 true run at that size loads); default: the "
                        "plain layout of --zero1 false runs")
    p.add_argument("--merge_lora", "--merge-lora", action="store_true",
                   help="hf output: fold LoRA into the base weights (the adapter is kept as a no-op)")
    p.add_argument("--tag", help="checkpoint tag written under DST (default: step_N of a training checkpoint, "
                                 "else pretrained_weight for nxd, global_stepN for deepspeed, step_N of the Adam "
                                 "step for dcp)")
    p.add_argument("--src_tag", "--src-tag", help="tag to read when SRC is a checkpoint dir (default: newest)")
    p.add_argument("--config", help="ScaleDownConfig (YAML/JSON) of a checkpoint that does not record its model")
    add_base_model_flags(p, generator_help="oscar: local folder (or hub name) of the base generator, instead of "
                         "config.json's decoder_model_name (--from oscar) / the model's generator_model_name (--to oscar)")
    for field, what in (("decoder_model_name", "generator"), ("compr_model_name", "compressor")):
        p.add_argument(f"--{field}", help=f"--to oscar: the name config.json gives the base {what} (e.g. its hub id); "
                                          f"default: the model's own, a local folder as its absolute path")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what DST already holds (hf: the folder; nxd / deepspeed / dcp: DST/TAG); without "
                        "it an existing destination is an error and nothing is written")
    p.add_argument("--trust_remote_code", "--trust-remote-code", action="store_true",
                   help="let the models this conversion loads run their own code (custom generator architectures); "
                        "a trust_remote_code value saved in SRC is ignored")
    return p


def convert_main(argv: Optional[Sequence[str]] = None, prog: str = "scaledown convert") -> int:
    args = build_parser(prog).parse_args(argv)
    from scaledown.checkpoint.conversion import convert  # torch: after the flags are checked
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecation chatter on model build
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    result = convert(args.src_format, args.dst_format, args.src, args.dst, tp=args.tp, pp=args.pp,
                     kv_replication=args.kv_replication, xser=args.xser, merge_lora=args.merge_lora, tag=args.tag,
                     src_tag=args.src_tag, zero1_dp=args.zero1_dp, config_file=args.config, log=say,
                     generator_path=args.generator_path, compressor_path=args.compressor_path,
                     trust_remote_code=args.trust_remote_code, overwrite=args.overwrite,
                     released_names={"decoder_model_name": args.decoder_model_name,
                                     "compr_model_name": args.compr_model_name})
    print(f"wrote {args.dst_format} checkpoint {result.path} ({', '.join(result.carried)})")
    for note in result.notes:
        print(f"note: {note}")
    return 0
