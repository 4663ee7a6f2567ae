# Test entry: launchers/train_trn1.py with the NxD TEST DOUBLE installed (for torchrun / subprocess tests).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/ (nxd_double)

from nxd_double import install  # noqa: E402

install()

from scaledown.cli.train import launcher_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(launcher_main("neuron"))
