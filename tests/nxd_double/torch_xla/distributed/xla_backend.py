# TEST DOUBLE of torch_xla.distributed.xla_backend: registers the "xla" process-group backend (gloo underneath).
import torch.distributed as dist


def _create_xla_process_group(store, rank, size, timeout):
    return dist.ProcessGroupGloo(store, rank, size, timeout)


if "xla" not in dist.Backend.backend_list:
    dist.Backend.register_backend("xla", _create_xla_process_group, devices=["cpu"])
