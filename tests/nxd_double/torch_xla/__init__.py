# TEST DOUBLE of torch_xla 2.9: the XLA device is the CPU; graphs run eagerly.
__version__ = "2.9.0"
