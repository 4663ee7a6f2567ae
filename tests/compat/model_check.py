# Run by tests/test_transformers_compat.py in a venv with the oldest transformers/peft the neuron extra allows.
"""Usage: model_check.py SAVED_DIR BATCH_FILE OUT_DIR. Loads the model the main environment (newest transformers)
saved, checks its loss on the same batch, trains one step (forward/backward, LoRA and compressor gradients),
saves and reloads it, and checks that NxD's pipeline trace of it (torch.fx + scaledown's mask leaves) computes the
same loss as the eager model. Prints one JSON line with the numbers."""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def pipeline_trace_loss(model, batch) -> float:
    """The loss of the fx-traced pipeline module (what NxDPPModel splits), through the NxD test double's tracer."""
    from nxd_double import install
    install()
    from neuronx_distributed.pipeline.trace import TorchTracerWrapper, trace_model
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.neuron.batches import PipelineModule
    from scaledown.training.backends.neuron.nxd_config import PIPELINE_INPUTS
    from scaledown.training.backends.neuron.parallelize import layer_classes
    from scaledown.training.backends.neuron.trace import leaf_module_names, tracer_class
    plan = ParallelPlan.for_model(model, 1, 2, None)
    leaves = leaf_module_names(model, plan.layer_names) + [c.__name__ for c in layer_classes(model, plan)]
    module = PipelineModule(model)
    traced = trace_model(module, input_names=list(PIPELINE_INPUTS), tracer_cls=tracer_class(TorchTracerWrapper),
                         leaf_modules=leaves)
    weights = dict(module.named_parameters())
    loose = [n.target for n in traced.graph.nodes if n.op == "get_attr" and n.target in weights]
    assert not loose, f"weights read outside leaf modules stay outside every pipeline stage: {loose}"
    from scaledown.models.scaledown_model import loss_counts
    from scaledown.training.backends.neuron.batches import with_loss_weights
    tokens, scored = loss_counts(batch)   # weights 1/T, 1/S: the traced objective is the batch's mean loss
    inputs = with_loss_weights(batch, 1.0 / max(tokens, 1), 1.0 / max(scored, 1))
    with torch.no_grad():
        return float(traced(**{k: inputs[k] for k in PIPELINE_INPUTS}))


def main(saved: str, batch_file: str, out: str) -> None:
    import transformers
    from scaledown.models.scaledown_model import ScaleDownModel
    batch = torch.load(batch_file, weights_only=True)
    model = ScaleDownModel.from_pretrained(saved)
    model.eval()
    with torch.no_grad():
        loaded_loss = float(model(batch).loss)
    model.train()
    model.zero_grad()
    output = model(batch)
    output.loss.backward()
    grads = {name: float(p.grad.abs().sum()) for name, p in model.named_parameters() if p.grad is not None}
    lora = sum(v for k, v in grads.items() if "lora_" in k)
    memory = grads.get("compressor.memory_tokens.memory_embeddings", 0.0)
    model.save_pretrained(out)
    again = ScaleDownModel.from_pretrained(out)
    again.eval()
    model.eval()
    with torch.no_grad():
        before, after = float(model(batch).loss), float(again(batch).loss)
    model.static_shapes = True   # the NxD backend's setting: logits at every position
    with torch.no_grad():
        eager = float(model(batch).loss)
    print(json.dumps({"transformers": transformers.__version__, "transformers_file": transformers.__file__,
                      "loaded_loss": loaded_loss, "train_loss": float(output.loss), "lora_grad": lora,
                      "memory_grad": memory, "before_save": before, "after_reload": after,
                      "traced_loss": pipeline_trace_loss(model, batch), "eager_loss": eager}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
