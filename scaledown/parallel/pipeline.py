# Pipeline-parallel stage cuts of the ScaleDown model: which stage runs each decoder layer and every other weight.
"""THE stage rule (read by the NxD backend and by the converters; there is no other copy):

1. The decoder layers of the whole model, in forward order, are the compressor backbone's layers
   followed by the generator's layers: L = L_compressor + L_generator.
2. They are split like NxD's `pipeline/partition.py::create_partitions(pp, layer_names)`: every stage gets
   L // pp layers and the remainder goes one each to the LAST stages. The cut after stage s is the name of
   its last layer (NxD's `pipeline_cuts`). Stage s runs on PP rank s (no virtual pipeline).
3. Any other weight runs in the stage of the next decoder layer in forward order (NxD's traced split puts
   everything after a cut into the following stage), and after the last layer in the last stage:
   - all embeddings (generator embed_tokens, compressor token embeddings, memory / RR embeddings) -> stage 0
   - the compressor's tail (backbone final norm, projection, memory_norm, rr_head) -> the stage of the
     generator's first layer
   - the generator's final norm and lm_head -> the last stage
"""
from __future__ import annotations

from scaledown.errors import ConfigError


def layers_per_stage(num_layers: int, pp: int) -> list[int]:
    """NxD create_partitions: L // pp each, the remainder added to the last stages."""
    if pp < 1:
        raise ConfigError(f"--pp {pp} is invalid: use 1 or more pipeline stages.")
    if pp > num_layers:
        raise ConfigError(f"--pp {pp} is larger than the model's {num_layers} decoder layers (compressor + generator); "
                          f"every pipeline stage needs at least one layer. Use --pp {num_layers} or less.")
    counts = [num_layers // pp] * pp
    for i in range(num_layers % pp):
        counts[pp - 1 - i] += 1
    return counts


def pipeline_cuts(layer_names: list[str], pp: int) -> list[str]:
    """The pp-1 cut names NxDPPModel(pipeline_cuts=...) takes: the last layer of each stage but the last."""
    cuts, end = [], 0
    for count in layers_per_stage(len(layer_names), pp)[:-1]:
        end += count
        cuts.append(layer_names[end - 1])
    return cuts


def stage_of_layers(layer_names: list[str], pp: int) -> dict[str, int]:
    """Layer module name -> stage."""
    stages: dict[str, int] = {}
    index = 0
    for stage, count in enumerate(layers_per_stage(len(layer_names), pp)):
        for name in layer_names[index:index + count]:
            stages[name] = stage
        index += count
    return stages
