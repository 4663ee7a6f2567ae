# TEST DOUBLE of torch_xla.distributed.parallel_loader.MpDeviceLoader: moves batches to the device, one step each.
import torch

from torch_xla.core import xla_model as xm


class MpDeviceLoader:
    def __init__(self, loader, device, **kwargs):
        self._loader, self._device = loader, device
        self._batches_per_execution = kwargs.get("batches_per_execution", 1)

    def __iter__(self):
        for count, batch in enumerate(self._loader):
            if count and count % self._batches_per_execution == 0:
                xm.mark_step()   # torch-xla's PerDeviceLoader cuts the graph before handing out the next batch
            yield {k: v.to(self._device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def __len__(self):
        return len(self._loader)
