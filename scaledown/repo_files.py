# Files shipped beside the package in the repository (ds_configs/, neuron_configs/). Found from the package's
# own folder, so moving a module deeper never breaks a default path (it did when the backends became packages).
import os

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_path(*parts: str) -> str:
    """Absolute path of a file or folder under the repository root, e.g. repo_path("ds_configs", "zero3.json")."""
    return os.path.join(REPO_DIR, *parts)
