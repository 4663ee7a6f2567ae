# Trainable weights are float32 whatever dtype a generator folder was saved in (bf16 hub checkpoints load as bf16).
import json
import os

import torch

from scaledown.training.backends.local import LocalBackend


def _bf16_folder(path: str, name: str) -> str:
    """A tiny model saved like a bf16 hub checkpoint (config.json says bfloat16) + the tiny tokenizer."""
    from transformers import AutoModelForCausalLM
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_models.tiny_model_config(name)).to(torch.bfloat16).save_pretrained(path)
    load_tiny_tokenizer().save_pretrained(path)
    return path


class RecordingBackend(LocalBackend):
    """The one-process backend, noting each phase's optimizer dtypes and its compressor weights at the start."""

    def __init__(self, config):
        super().__init__(config)
        self.phases: list[dict] = []

    def prepare(self, param_groups, lr_lambda, accumulation):
        super().prepare(param_groups, lr_lambda, accumulation)
        dtypes = {g["name"]: {p.dtype for p in g["params"]} for g in self.optimizer.param_groups}
        start = {k: v.detach().clone() for k, v in self._model.compressor.state_dict().items()}
        self.phases.append({"dtypes": dtypes, "compressor": start})


def test_bf16_folder_generator_trains_float32_weights_on_one_process(tmp_path):
    from scaledown.cli.train import train_main
    folder = _bf16_folder(str(tmp_path / "bf16_generator"), "scaledown-tiny-mistral")
    assert json.load(open(os.path.join(folder, "config.json")))["dtype"] == "bfloat16"
    backends = []

    def factory(config):
        backends.append(RecordingBackend(config))
        return backends[-1]

    # OSCAR's compressor learning rate (5e-5): in bf16 weights of |w| > ~0.013 such a step rounds away
    args = ["--preset", "tiny", "--generator_model_name", folder, "--max_steps", "4", "--generator_warmup_ratio",
            "0.25", "--warmup_ratio", "0", "--learning_rate_compressor_nlayers", "5e-5", "--batch_size", "4",
            "--micro_batch_size", "2", "--num_train_examples", "16", "--num_eval_examples", "2",
            "--eval_max_examples", "0", "--eval_steps", "0", "--save_steps", "0", "--logging_steps", "1",
            "--output_dir", str(tmp_path / "run")]
    assert train_main(args, backend_factory=factory) == 0
    backend = backends[0]
    model = backend.model
    # the frozen base keeps the folder's bf16 (half the memory of a 7B); what trained is float32
    assert [p["dtypes"] for p in backend.phases] == [{"generator": {torch.float32}},
                                                     {"generator": {torch.float32}, "compressor": {torch.float32}}]
    assert all(p.dtype == torch.float32 for p in model.compressor.parameters())
    # the compressor's weights move: nearly every element of its layers' matrices changed in 3 steps
    start = backend.phases[1]["compressor"]
    for name, now in model.compressor.state_dict().items():
        if ".layers." in name and now.dim() == 2:
            moved = (now != start[name]).float().mean().item()
            assert moved > 0.9, (name, moved)


def test_separate_compressors_and_saved_compressors_load_float32(tmp_path):
    from scaledown import ScaleDownConfig, ScaleDownModel
    llama = _bf16_folder(str(tmp_path / "bf16_llama"), "scaledown-tiny-llama")
    config = ScaleDownConfig.from_dict({"preset": "tiny", "compressor_type": "causal_lm",
                                        "compressor_model_name": llama})
    model = ScaleDownModel(config)
    assert {p.dtype for p in model.compressor.parameters()} == {torch.float32}
    # a model folder whose compressor was written in bf16 (config.json says so) loads it as float32
    saved = str(tmp_path / "saved")
    model.save_pretrained(saved)
    path = os.path.join(saved, "compressor", "config.json")
    settings = json.load(open(path))
    settings["dtype"] = "bfloat16"
    json.dump(settings, open(path, "w"))
    from safetensors.torch import load_file, save_file
    weights = os.path.join(saved, "compressor", "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights)
    loaded = ScaleDownModel.from_pretrained(saved)
    assert {p.dtype for p in loaded.compressor.parameters()} == {torch.float32}
