# Every family cell trained by 2 FSDP2 ranks in one torchrun job, through `scaledown train --backend torch`'s path.
"""python -m torch.distributed.run --nproc_per_node 2 tests/torch_family_run.py JOBS_JSON

JOBS_JSON: a list of train argv lists (tests/integration/test_family_matrix.py::train_argv); each runs to the end in
turn on the same process group (one job: one start-up and one rendezvous for all families).
"""
import json
import sys

from scaledown.training.backends.torch_native.backend import TorchBackend


class KeepGroup(TorchBackend):
    """The torch backend, leaving the process group open for the next cell (the last one closes it)."""

    def close(self) -> None:
        self.barrier()


def main():
    from scaledown.cli.train import ALL_BACKENDS, train_main
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    backend = None
    for argv in jobs:
        def build(config):
            nonlocal backend
            backend = KeepGroup(config)
            return backend
        code = train_main([*argv, "--backend", "torch"], prog="scaledown train", backend_factory=build,
                          backends=ALL_BACKENDS)
        assert code == 0, (argv, code)
    TorchBackend.close(backend)


if __name__ == "__main__":
    main()
