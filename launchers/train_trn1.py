#!/usr/bin/env python
# Trn1 entry point: `torchrun --nproc_per_node 32 launchers/train_trn1.py --neuron_config neuron_configs/tp8_pp1.json ...`.
import os
import sys

# run from a checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaledown.cli.train import launcher_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launcher_main("neuron"))   # = scaledown train --backend neuron
