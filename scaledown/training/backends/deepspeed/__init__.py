# The DeepSpeed ZeRO-3 backend: its flags and launch (launch.py), config resolution (ds_config.py), engine (backend.py),
# gathering of partitioned weights (gather.py) and the engine's own checkpoints (checkpoint_io.py).
