# A toy training backend outside scaledown/: the one-process backend that records it ran (`--backend tests.toy_backend:ToyBackend`).
import json
import os

from scaledown.training.backends.local import LocalBackend


class ToyBackend(LocalBackend):
    """LocalBackend that counts its setup and optimizer steps and writes them next to the run's final/ folder."""
    name = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.calls = {"setup": 0, "optimizer_step": 0}

    def setup(self, model):
        self.calls["setup"] += 1
        super().setup(model)

    def optimizer_step(self):
        self.calls["optimizer_step"] += 1
        return super().optimizer_step()

    def export_pretrained(self, directory):
        super().export_pretrained(directory)
        with open(os.path.join(os.path.dirname(os.path.abspath(directory)), "toy_backend.json"), "w") as f:
            json.dump(self.calls, f)


class NotABackend:
    """Named on the command line by mistake: refused, naming the class."""
