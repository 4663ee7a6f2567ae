# Backends: local (one process), deepspeed (ZeRO-3), neuron (NxD TP/PP/ZeRO-1); chosen by the launcher.
