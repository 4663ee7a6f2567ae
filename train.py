#!/usr/bin/env python
# Train ScaleDown on one process: `python train.py` (tiny preset, built-in data) or `--train_data FILE ...`.
import sys

from scaledown.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
