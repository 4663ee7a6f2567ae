#!/usr/bin/env python
# GPU-cluster entry point: `deepspeed launchers/train_gpu.py --deepspeed ds_configs/zero3.json [train.py flags]`.
import os
import sys

# run from a checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaledown.cli.train import launcher_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launcher_main("deepspeed"))   # = scaledown train --backend deepspeed
