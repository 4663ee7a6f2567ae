# TEST DOUBLE of torch_xla.runtime: ranks from torch.distributed.
import os

import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def global_ordinal() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_ordinal() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))
