#!/usr/bin/env python
# PyTorch-native entry point: `torchrun --nproc_per_node N launchers/train_torch.py [train.py flags]` (FSDP2, DCP).
import os
import sys

# run from a checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaledown.cli.train import launcher_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launcher_main("torch"))   # = scaledown train --backend torch
