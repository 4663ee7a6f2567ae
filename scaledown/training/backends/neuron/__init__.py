# The NeuronX Distributed backend (Trn1): flags and launch (launch.py), profile files (profile_file.py), run checks and
# NxD arguments (nxd_config.py), the parallel model (parallelize.py, stack.py, trace.py), batches (batches.py), engine (backend.py).
