# NxD backend rules that need no NxD (issue 14): static shapes, NxD config flags, refusals, meta-built buffers.
import pytest
import torch

from conftest import tiny_config
from scaledown.errors import ConfigError
from scaledown.training.backends.neuron import batches as nb
from scaledown.training.backends.neuron.nxd_config import nxd_config_kwargs, refuse_unsupported
from scaledown.training.batching import plan_batches


def _rows(n, seed, long=False):
    from scaledown.data.synthetic import generate_examples
    rows = generate_examples(n, seed=seed)
    if long:   # every field longer than its configured maximum: collate truncates to the maxima
        for row in rows:
            row["query"] = " ".join(["word"] * 200)
            row["documents"] = [" ".join(["text"] * 300)] * 5
            row["answer"] = " ".join(["answer"] * 50)
    return rows


def test_static_shapes_come_from_the_config_not_the_batch():
    """NxDPPModel keeps its first call's inter-stage shapes (pipeline/model.py shape_traced): every batch of a run,
    short or at every configured maximum, QA or pretraining, pads to one shape."""
    from scaledown import ScaleDownModel
    model = ScaleDownModel(tiny_config())
    inputs = model.inputs
    shapes = nb.StaticShapes.for_inputs(inputs, 3, "memory")
    batches = [inputs.collate(_rows(4, 1), max_documents=3, pad_documents_to=3),
               inputs.collate(_rows(2, 2, long=True), max_documents=3, pad_documents_to=3)]
    long_chunk = " ".join(["text"] * 300)      # pretraining: the chunk is the target (up to doc_max_length + 1)
    chunks = [{"documents": [long_chunk], "task": task, "answer": long_chunk} for task in ("autoencode", "continuation")]
    batches.append(inputs.collate_pretraining(chunks, max_documents=3, pad_documents_to=3))
    padded = shapes.pad(batches)
    for key in ("input_ids", "labels", "compressor_input_ids", "document_mask"):
        assert len({tuple(b[key].shape[1:]) for b in padded}) == 1, key
    assert padded[1]["input_ids"].shape[1] == shapes.generator and shapes.generator % nb.TOKEN_BUCKET == 0
    # the longest batch fits without truncation and loses no label
    assert int((padded[1]["labels"] != -100).sum()) == int((batches[1]["labels"] != -100).sum())
    # pipeline evaluation: rows padded to the micro-batch, the extra rows count nothing
    rows = nb.StaticShapes.for_inputs(inputs, 3, "memory", rows=4).pad([batches[1]])[0]
    assert rows["input_ids"].shape[0] == 4 and not rows["reranking_mask"][2:].any()
    assert (rows["labels"][2:] == -100).all()
    out, ref = model(rows), model(shapes.pad([batches[1]])[0])
    assert float(out.ce_loss) == pytest.approx(float(ref.ce_loss), rel=1e-6)
    assert float(out.rerank_loss) == pytest.approx(float(ref.rerank_loss), rel=1e-6)


def test_pipeline_config_leaves_dp_reduction_to_the_optimizer():
    """NxDPPModel._reduce_grads_task all-reduces DP gradients unless use_zero1_optimizer or use_optimizer_wrapper;
    the NxDOptimizer reduces them too, so the backend sets use_optimizer_wrapper."""
    cfg = tiny_config(pipeline_parallel_size=2, zero1=False)
    kwargs = nxd_config_kwargs(cfg, layer_classes=[torch.nn.Linear], num_microbatches=2, meta_device_init=False)
    assert kwargs["pipeline_config"]["use_optimizer_wrapper"] is True


def test_sequence_parallel_is_refused_with_the_reason():
    cfg = tiny_config(tensor_parallel_size=2, sequence_parallel=True)
    with pytest.raises(ConfigError, match=r"--sequence_parallel .* dimension 0 .* batch-first"):
        refuse_unsupported(cfg, plan_batches(8, 4, 1), 2)


def test_pipeline_microbatches_smaller_than_evaluation_batches_are_refused():
    cfg = tiny_config(pipeline_parallel_size=2, num_microbatches=4)
    with pytest.raises(ConfigError, match=r"--num_microbatches 4 makes pipeline micro-batches of 2 rows"):
        refuse_unsupported(cfg, plan_batches(8, 4, 1), 4)


def test_meta_built_rotary_buffers_are_computed():
    """A model built from a description is on the meta device, rotary inv_freq included, and no checkpoint holds
    it: the backend's param_init_fn computes it (NxD's reinit_model replaces parameters only)."""
    from scaledown import ScaleDownModel
    from scaledown.checkpoint.description import ModelDescription
    from scaledown.training.backends.neuron.backend import _init_on_host
    cfg = tiny_config()
    skeleton = ModelDescription.from_config(cfg).skeleton()
    real = ScaleDownModel(cfg)
    for module in skeleton.modules():
        _init_on_host(module, torch.device("cpu"))
    found = dict(skeleton.named_buffers())
    for name, buffer in real.named_buffers():
        assert found[name].device.type == "cpu", name
        if "inv_freq" in name:
            assert torch.equal(found[name], buffer), name
    assert any("inv_freq" in name for name in found)


GEMMA_EMBEDDING_CHECK = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[2])   # tests/: conftest's tiny_config and the model zoo
from conftest import tiny_config
from model_zoo import build
from scaledown import ScaleDownModel
from scaledown.parallel import ParallelPlan
from scaledown.training.backends.neuron.parallelize import apply_plan
model = ScaleDownModel(tiny_config(generator_model_name=build("gemma2", sys.argv[1]), compressor_type="n_layers",
                                   num_compressor_layers=1, generator_warmup_ratio=0.0))
ids = torch.tensor([[5, 9, 11, 40]])
with torch.no_grad():
    before = model.generator.get_input_embeddings()(ids)
sys.path.insert(0, sys.argv[3])   # the NxD double, after transformers loaded Gemma (the double fakes torch_xla)
from neuronx_distributed.parallel_layers import layers, parallel_state
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[4], rank=0, world_size=1)
parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
apply_plan(model, ParallelPlan.for_model(model, tp=1), layers, tp_rank=0)
embedding = model.generator.get_input_embeddings()
with torch.no_grad():
    after = embedding(ids)
print(type(embedding).__name__, float(before.abs().max()), float((after - before).abs().max()))
"""


def test_parallel_embedding_keeps_gemmas_scale(tmp_path, subprocess_env):
    """Gemma scales its embeddings by sqrt(hidden) inside the embedding module; the NxD double's ParallelEmbedding
    that the plan swaps in kept no scale (found by reading neuron/parallelize.py): the generator's first-layer input
    must be the same before and after the swap. (A subprocess: the double's fake torch_xla must not leak.)"""
    import os
    import subprocess
    import sys
    from conftest import ROOT
    from scaledown.training.backends.distributed_env import free_port
    tests = os.path.join(ROOT, "tests")
    proc = subprocess.run([sys.executable, "-c", GEMMA_EMBEDDING_CHECK, str(tmp_path / "gemma2"), tests,
                           os.path.join(tests, "nxd_double"), str(free_port())], env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, largest, difference = proc.stdout.split()[-3:]
    assert name == "ParallelEmbedding" and float(largest) > 0 and float(difference) < 1e-6, proc.stdout
