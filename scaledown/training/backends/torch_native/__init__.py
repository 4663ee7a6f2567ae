# The PyTorch-native backend: FSDP2 (fully_shard) data parallelism, DTensor tensor parallel and pipeline stages on a
# DeviceMesh, DCP checkpoints: its flags and launch (launch.py), mesh (mesh.py), tensor parallel (tensor_parallel.py),
# pipeline stages (pipeline_stages.py, pipeline_schedule.py), clipping (clipping.py), checkpoints (dcp_checkpoint.py)
# and engine (backend.py: TorchBackend).
