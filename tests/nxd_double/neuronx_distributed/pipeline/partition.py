# TEST DOUBLE of neuronx_distributed.pipeline.partition.create_partitions (NxD's even split, remainder to the last stages).
def create_partitions(pipeline_parallel_size, model_layer_names):
    num = len(model_layer_names) // pipeline_parallel_size
    assert num >= 1, "The partition cannot be created"
    per = [num] * pipeline_parallel_size
    for i in range(len(model_layer_names) % pipeline_parallel_size):
        per[pipeline_parallel_size - 1 - i] += 1
    cuts, current = [], 0
    for layers in per[:-1]:
        current += layers
        cuts.append(model_layer_names[current - 1])
    return cuts
