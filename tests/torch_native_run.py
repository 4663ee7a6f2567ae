# A short run of the tiny model on the torch (FSDP2) backend, started by torchrun from tests/test_torch_backend.py.
"""python -m torch.distributed.run --nproc_per_node N tests/torch_native_run.py OUT_JSON OUTPUT_DIR [KEY=VALUE ...]

Trains with the global batch fixed whatever N, writes rank 0's per-step losses and the run result to OUT_JSON.
"""
import json
import sys

from scaledown import ScaleDownConfig, ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.training import ScaleDownTrainer


def main():
    out_json, output_dir, *pairs = sys.argv[1:]
    values = {"preset": "tiny", "max_steps": 4, "generator_warmup_ratio": 0.0, "eval_steps": 0, "save_steps": 0,
              "batch_size": 8, "micro_batch_size": 2, "use_bf16": False, "output_dir": output_dir,
              "gradient_checkpointing": False, "lora_dropout": 0.0,
              "logging_steps": 1}   # dropout masks depend on the split
    for pair in pairs:
        key, _, value = pair.partition("=")
        values[key] = json.loads(value)
    resume = "auto" if values.pop("_resume", False) else None
    config = ScaleDownConfig.from_dict(values)
    from scaledown.training.backends.torch_native.backend import TorchBackend
    backend = TorchBackend(config)
    data = ScaleDownDataset(generate_examples(64, seed=1), config)
    evaluation = ScaleDownDataset(generate_examples(4, seed=9), config) if config.eval_max_examples else None
    model = backend.build_model(lambda: ScaleDownModel(config))
    result = ScaleDownTrainer(model, config, data, evaluation, backend=backend, resume_from=resume,
                              progress=False).train()
    if backend.is_main:
        with open(out_json, "w") as f:
            json.dump({"losses": result.losses, "steps": result.steps, "eval_after": result.eval_after,
                       "final_dir": result.final_dir}, f)
    backend.close()


if __name__ == "__main__":
    main()
