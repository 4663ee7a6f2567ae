# `python -m scaledown.cli.neuron_exports [PROFILE.json]`: the shell exports slurm/train_trn1.sh sources (profile errors exit 2).
import sys

from scaledown.cli.errors import run_cli
from scaledown.training.backends.neuron.profile_file import shell_exports

if __name__ == "__main__":
    sys.exit(run_cli(lambda: print(shell_exports(sys.argv[1] if len(sys.argv) > 1 else None)) or 0))
