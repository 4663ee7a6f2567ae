# Installs the `scaledown` package and the `scaledown` console command. CPU torch: install torch==2.13.0 first.
from setuptools import find_packages, setup

# Neuron 2.28 is the last release with NxD training (PyTorch 2.9, NxD 0.17); its wheels come from
# https://pip.repos.neuron.amazonaws.com (pip install -e .[neuron] --extra-index-url <that URL>); neuronx-cc 2.24
# is the compiler of Neuron 2.27-2.29 (component release notes).
NEURON = ["torch-neuronx==2.9.*", "neuronx-distributed==0.17.*", "neuronx-cc==2.24.*", "torch-xla==2.9.*",
          "transformers>=4.48,<4.57"]
# DeepSpeed 0.19.3 is the first release with PR #8148 (ZeRO-3 + non-reentrant gradient checkpointing + frozen base
# weights; older releases fail in backward with a CheckpointError): the default GPU path needs it.
DEEPSPEED = "deepspeed>=0.19.3"

setup(
    name="scaledown",
    version="0.1.0",
    description="OSCAR-style online soft compression for RAG: one model on DeepSpeed ZeRO-3 and NeuronX Distributed",
    python_requires=">=3.10",
    packages=find_packages(include=["scaledown", "scaledown.*"]),
    package_data={"scaledown": ["assets/*.json"]},
    install_requires=[
        "torch>=2.9",
        "transformers>=4.48",
        "peft>=0.14",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "pyyaml>=6",
        "tqdm>=4.66",
        "tensorboard>=2.15",
        "numpy>=1.24",
    ],
    extras_require={
        "gpu": [DEEPSPEED, "ninja", "mpi4py>=3.1", "psutil"],
        "neuron": NEURON,
        "data": ["datasets>=2.19", "bm25s>=0.2", "scipy>=1.10", "pyarrow>=14"],
        # ROUGE-L is computed in scaledown.evaluation.metrics; retrieval for benchmarks uses the data extra's packages
        "eval": ["matplotlib>=3.7", "datasets>=2.19", "bm25s>=0.2", "scipy>=1.10", "pyarrow>=14"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", DEEPSPEED, "ninja", "mpi4py>=3.1", "psutil",
                "datasets>=2.19", "bm25s>=0.2", "scipy>=1.10", "pyarrow>=14", "matplotlib>=3.7",
                "accelerate>=1.0"],
    },
    entry_points={"console_scripts": ["scaledown=scaledown.cli.main:main"]},
)
