#!/bin/bash
# sbatch script: DeepSpeed ZeRO training on one or many GPU nodes (srun + torchrun rendezvous), requeue-safe.
#
#   sbatch slurm/train_gpu.sh --max_steps 1000 --output_dir runs/gpu             # one node, its GPUs
#   sbatch --nodes 4 --gpus-per-node 8 slurm/train_gpu.sh --train_data data.json   # four nodes
#   DS_CONFIG=ds_configs/zero3_offload.json sbatch slurm/train_gpu.sh ...          # another DeepSpeed config
#   NPROC_PER_NODE=2 sbatch slurm/train_gpu.sh ...                                 # ranks per node (CPU nodes)
#   BACKEND=torch sbatch slurm/train_gpu.sh ...                                    # PyTorch-native FSDP2 instead
#
# Submit from the repository root (found through SLURM_SUBMIT_DIR; or set SCALEDOWN_HOME). Every
# argument goes to launchers/train_gpu.py after `--resume_from auto`, so a requeued job continues
# from its newest complete checkpoint. The output folder defaults to outputs/<job name>-<job id>
# (the id survives a requeue). Ranks per node: NPROC_PER_NODE, else the GPUs SLURM allocated on a
# node, else the GPUs the node shows, else 1; request GPUs at submission (--gpus-per-node) as the
# cluster wants: this script hard-codes no --gres. 180 s before the time limit the batch shell gets
# SIGTERM, forwards it to the ranks (they checkpoint and exit), and requeues the job.
#SBATCH --job-name=scaledown-gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:TERM@180
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

REPO=${SCALEDOWN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
if [ ! -f "$REPO/launchers/train_gpu.py" ] && [ -f "$REPO/../launchers/train_gpu.py" ]; then
  REPO=$(cd "$REPO/.." && pwd)   # submitted from inside slurm/
fi
if [ ! -f "$REPO/launchers/train_gpu.py" ]; then
  echo "error: launchers/train_gpu.py is not under $REPO. Submit from the ScaleDown repository root" \
       "or set SCALEDOWN_HOME=/path/to/repository." >&2
  exit 2
fi
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PYTHON=${PYTHON:-python3}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero3.json}
BACKEND=${BACKEND:-deepspeed}   # deepspeed (launchers/train_gpu.py) or torch (launchers/train_torch.py: FSDP2, DCP)
case "$BACKEND" in
  deepspeed) LAUNCH=(launchers/train_gpu.py --deepspeed "$DS_CONFIG") ;;
  torch) LAUNCH=(launchers/train_torch.py) ;;
  *) echo "error: BACKEND=$BACKEND is not a GPU backend; use BACKEND=deepspeed (default) or BACKEND=torch." >&2
     exit 2 ;;
esac
JOB_TAG="${SLURM_JOB_NAME:-scaledown-gpu}-${SLURM_JOB_ID:-local}"
OUTPUT_DIR=${OUTPUT_DIR:-$REPO/outputs/$JOB_TAG}
LOG_DIR=${LOG_DIR:-$REPO/logs/$JOB_TAG}
mkdir -p "$LOG_DIR"

gpus_per_node() {
  local n=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}
  n=${n##*:}                                   # "a100:4" -> 4
  local visible=${CUDA_VISIBLE_DEVICES:-${SLURM_JOB_GPUS:-}}
  if [ -z "$n" ] && [ -n "$visible" ]; then
    n=$(echo "$visible" | tr ',' '\n' | grep -c .)
  fi
  if [ -z "$n" ] && command -v nvidia-smi >/dev/null 2>&1; then
    n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  fi
  if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ]; then echo "$n"; else echo 1; fi
}

NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
NPROC_PER_NODE=${NPROC_PER_NODE:-$(gpus_per_node)}
HEAD_NODE=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" | head -n 1)
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
# torchrun waits this long for ranks to finish their SIGTERM checkpoint before killing them
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-150}

echo "[$(date -Is)] job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): $NNODES node(s) x $NPROC_PER_NODE" \
     "rank(s), head $HEAD_NODE:$MASTER_PORT, backend $BACKEND ${LAUNCH[*]}, rank logs $LOG_DIR, arguments: $*"

srun --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks-per-node=1 --output="$LOG_DIR/%N.log" \
  "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE" \
    --rdzv_backend=c10d --rdzv_endpoint="$HEAD_NODE:$MASTER_PORT" --rdzv_id="${SLURM_JOB_ID:-0}" \
    "${LAUNCH[@]}" --output_dir "$OUTPUT_DIR" --resume_from auto "$@" &
STEP=$!

on_term() {
  trap - TERM
  echo "[$(date -Is)] SIGTERM: asking the ranks to checkpoint, then requeueing job ${SLURM_JOB_ID:-?}"
  # signal the job step's tasks (torchrun forwards to the ranks); SIGTERM to srun itself would kill them
  scancel --signal=TERM "${SLURM_JOB_ID}" 2>/dev/null || kill -TERM "$STEP" 2>/dev/null || true
  wait "$STEP" || true
  scontrol requeue "${SLURM_JOB_ID}" || true
  exit 143
}
trap on_term TERM

set +e
wait "$STEP"
status=$?
set -e
echo "[$(date -Is)] training exited with status $status"
exit "$status"
