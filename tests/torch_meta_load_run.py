# A torch-backend run of a folder generator that records the parameter elements each rank holds while it loads.
"""python -m torch.distributed.run --nproc_per_node N tests/torch_meta_load_run.py OUT_JSON OUTPUT_DIR [KEY=VALUE ...]

Like tests/torch_native_run.py (the calls `scaledown train` makes: backend.build_model, then the trainer), plus: every
rank writes OUT_JSON.<rank> with the most parameter elements it held (local, not on the meta device) after the build,
after each tensor meta_load filled and after setup; the model's total elements; its largest decoder layer's; the
elements of this rank's pipeline stage (the whole model without --pp) and its data-parallel and tp sizes.
`_full_build=true` takes the path before meta_load (the whole model built on every rank).
"""
import functools
import json
import sys

import torch

from scaledown import ScaleDownConfig, ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.training import ScaleDownTrainer
from scaledown.training.backends.torch_native.backend import TorchBackend, meta_load
from scaledown.training.backends.torch_native.backend import sharding_units


def resident(model) -> int:
    """Parameter elements this rank holds: a DTensor's local part, nothing for a parameter still on meta."""
    from torch.distributed.tensor import DTensor
    local = (p.to_local() if isinstance(p, DTensor) else p for p in model.parameters())
    return sum(t.numel() for t in local if t.device.type != "meta")


def main():
    out_json, output_dir, *pairs = sys.argv[1:]
    values = {"preset": "tiny", "max_steps": 3, "generator_warmup_ratio": 0.0, "eval_steps": 0, "save_steps": 0,
              "batch_size": 8, "micro_batch_size": 2, "use_bf16": False, "output_dir": output_dir,
              "gradient_checkpointing": False, "lora_dropout": 0.0, "logging_steps": 1, "eval_max_examples": 0}
    for pair in pairs:
        key, _, value = pair.partition("=")
        values[key] = json.loads(value)
    full_build = values.pop("_full_build", False)
    config = ScaleDownConfig.from_dict(values)
    backend = TorchBackend(config)
    backend.load_on_meta = not full_build
    peak = [0]
    model = backend.build_model(lambda: ScaleDownModel(config))
    measure = lambda: peak.__setitem__(0, max(peak[0], resident(model)))  # noqa: E731
    measure()
    total = sum(p.numel() for p in model.parameters())
    layer = max(sum(p.numel() for p in unit.parameters()) for unit in sharding_units(model))
    meta_load.load_weights = functools.partial(meta_load.load_weights, on_tensor=measure)
    setup, stage = backend.setup, [total]
    # a DTensor's numel is its global one: the stage's parameters after the cut, whole
    backend.setup = lambda m: (setup(m), measure(), stage.__setitem__(0, sum(p.numel() for p in m.parameters())))
    data = ScaleDownDataset(generate_examples(64, seed=1), config)
    result = ScaleDownTrainer(model, config, data, None, backend=backend, progress=False).train()
    import scaledown
    with open(f"{out_json}.{backend.rank}", "w") as f:
        json.dump({"losses": result.losses, "peak": peak[0], "total": total, "layer": layer, "stage": stage[0],
                   "world": backend.world_size, "dp": backend.dp_size, "tp": backend.shape.tp,
                   "module": scaledown.__file__}, f)
    backend.close()


if __name__ == "__main__":
    main()
