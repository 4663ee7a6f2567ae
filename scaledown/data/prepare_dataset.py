# `python -m scaledown.data.prepare_dataset` (the original quick start's command): a shim for `scaledown prepare-data`.
"""The one module below scaledown/cli that imports it: the seed's command keeps working; the code is in
scaledown/cli/prepare_data.py (the driver) and scaledown/data/ (what it drives)."""
import sys

from scaledown.cli.prepare_data import prepare_main  # noqa: F401  (tests and users import it from here)

if __name__ == "__main__":
    from scaledown.cli.errors import run_cli
    sys.exit(run_cli(lambda: prepare_main(prog="python -m scaledown.data.prepare_dataset")))
