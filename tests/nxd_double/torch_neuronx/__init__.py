# TEST DOUBLE of torch_neuronx (Neuron 2.28's PyTorch 2.9 package): only its version.
__version__ = "2.9.0.2.12.0"
