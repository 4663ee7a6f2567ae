# TEST DOUBLE of the NeuronX Distributed 0.17 + torch-xla 2.9 API surface the NxD backend uses (CPU, gloo).
"""Not NxD. NxD and torch-neuronx cannot be installed here (their PyPI names are placeholders), so the tests
import these stand-ins under the real module names. Signatures follow NxD 0.17 (Neuron 2.28) as written in
shared/reference/neuronx_distributed.md; behaviour is the part the backend relies on, run eagerly on CPU:

- parallel layers compute real tensor parallelism over gloo process groups (NxD's CPU mode does the same);
- xm.mark_step runs the step closures queued by xm.add_step_closure (what torch-xla does after a step);
- NxDPPModel partitions by NxD's rule (layers found by module registration order, create_partitions) and
  owns parameters per stage, but every pipeline rank computes the whole model (no fx tracing, no send/recv):
  stage-owned weights are broadcast from their owner before each step, so all ranks agree;
- save_checkpoint / load_checkpoint write and read NxD's trainer format (markers, dp/tp/pp shard names,
  xser through the converter's own writer), with num_kept_ckpts.

Use: `from nxd_double import install; install()` before importing scaledown.training.backends.neuron
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
