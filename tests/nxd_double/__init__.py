# TEST DOUBLE of the NeuronX Distributed 0.17 + torch-xla 2.9 API surface the NxD backend uses (CPU, gloo).
"""Not NxD. NxD and torch-neuronx cannot be installed here (their PyPI names are placeholders), so the tests
import these stand-ins under the real module names. Signatures follow NxD 0.17 (Neuron 2.28) as written in
shared/reference/neuronx_distributed.md; behaviour is the part the backend relies on, run eagerly on CPU:

- parallel layers compute real tensor parallelism over gloo process groups (NxD's CPU mode does the same);
- xm.mark_step runs the step closures queued by xm.add_step_closure (what torch-xla does after a step);
- NxDPPModel does what NxD does: auto-partition cuts (create_partitions), torch.fx trace, split_module, one
  stage per pipeline rank, non-local weights frozen; run_train runs every stage on its own rank and moves
  activations forward and their gradients back over gloo (pipeline/model.py says how it differs from 1F1B);
- save_checkpoint / load_checkpoint write and read NxD's trainer format (markers, dp/tp/pp shard names,
  xser through the converter's own writer), with num_kept_ckpts;
- as strict as NxD 0.17 / torch-xla 2.9 where the backend depends on it (read from neuronx-distributed v2.28.0 and
  torch-xla v2.9.0; each module names its source file): ZeRO-1 is torch-xla's ZeroRedundancyOptimizer as NxD
  configures it (fp32 shards, the gradient-accumulation hook leaving gradients in main_grad, clipping at 1.0
  unless max_norm is passed, base_state state dicts), reinit replaces parameters only, activation checkpointing
  is reentrant, parallel layers reduce in fp32, ParallelEmbedding keeps a local padding_idx, arrange_kv_groups
  is NxD's, NxDPPModel keeps its first call's inter-stage shapes and reduces DP gradients unless told not to.

Use: `from nxd_double import install; install()` before importing scaledown.training.backends.neuron.backend
(tests/nxd_double/run.py does it for launched processes).
"""
from __future__ import annotations

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ("torch_xla", "torch_neuronx", "neuronx_distributed")


def install() -> None:
    """Make `import neuronx_distributed` / `torch_xla` / `torch_neuronx` resolve to this double."""
    # transformers / accelerate would take their TPU code paths on seeing torch_xla; the double is no TPU
    os.environ["USE_TORCH_XLA"] = "0"
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    for name in NAMES:
        module = sys.modules.get(name)
        if module is not None and not getattr(module, "__file__", "").startswith(HERE):
            raise RuntimeError(f"the real {name} is already imported; the NxD test double cannot replace it")
        importlib.import_module(name)
