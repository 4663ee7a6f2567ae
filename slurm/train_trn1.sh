#!/bin/bash
# sbatch script: NeuronX Distributed training on Trn1 nodes (torchrun per node), optional neuron_parallel_compile pass.
#
#   sbatch --nodes 4 slurm/train_trn1.sh --neuron_config neuron_configs/tp8_pp1.json --train_data data.json
#   sbatch --nodes 4 slurm/train_trn1.sh --precompile ...    # first a few steps under neuron_parallel_compile
#   sbatch slurm/train_trn1.sh --dry_run ...                  # validate and print the commands for this allocation
#
# Submit from the repository root (found through SLURM_SUBMIT_DIR, or set SCALEDOWN_HOME). Every argument but
# --dry_run / --precompile goes to launchers/train_trn1.py after `--resume_from auto`. The profile comes from
# --neuron_config (default neuron_configs/tp8_pp1.json): processes per node, master port and the
# Neuron/EFA environment (variables already set in the job win). Ask for nodes at submission
# (`--nodes N --exclusive` on a Trn1 partition); this script hard-codes no resource it may not get.
#SBATCH --job-name=scaledown-trn1
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

REPO=${SCALEDOWN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
[ -f "$REPO/launchers/train_trn1.py" ] || [ ! -f "$REPO/../launchers/train_trn1.py" ] || REPO=$(cd "$REPO/.." && pwd)
if [ ! -f "$REPO/launchers/train_trn1.py" ]; then
  echo "error: launchers/train_trn1.py is not under $REPO. Submit from the ScaleDown repository root or set" \
       "SCALEDOWN_HOME=/path/to/repository." >&2
  exit 2
fi
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}

DRY_RUN=0; PRECOMPILE=${PRECOMPILE:-0}; NEURON_CONFIG=neuron_configs/tp8_pp1.json; ARGS=(); prev=""
for arg in "$@"; do
  case "$arg" in
    --dry_run|--dry-run) DRY_RUN=1 ;;
    --precompile) PRECOMPILE=1 ;;
    --neuron_config=*|--neuron-config=*) NEURON_CONFIG=${arg#*=} ;;
    --neuron_config|--neuron-config) ;;
    *) if [ "$prev" = "--neuron_config" ] || [ "$prev" = "--neuron-config" ]; then NEURON_CONFIG=$arg; else ARGS+=("$arg"); fi ;;
  esac
  prev=$arg
done

EXPORTS=$("$PYTHON" -m scaledown.cli.neuron_exports "$NEURON_CONFIG")   # fails with the profile's error
eval "$EXPORTS"
NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
HOSTS=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" 2>/dev/null || hostname)
HEAD_NODE=$(echo "$HOSTS" | head -n 1)
JOB_TAG="${SLURM_JOB_NAME:-scaledown-trn1}-${SLURM_JOB_ID:-local}"
OUTPUT_DIR=${OUTPUT_DIR:-$REPO/outputs/$JOB_TAG}
TRAIN=(launchers/train_trn1.py --neuron_config "$NEURON_CONFIG" --output_dir "$OUTPUT_DIR" --resume_from auto "${ARGS[@]}")
TORCHRUN=(torchrun --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" --master_addr "$HEAD_NODE"
          --master_port "$MASTER_PORT")

echo "[$(date -Is)] job ${SLURM_JOB_ID:-?}: $NNODES node(s) [$(echo $HOSTS)] x $NPROC_PER_NODE processes, head" \
     "$HEAD_NODE:$MASTER_PORT, profile $NEURON_CONFIG, output $OUTPUT_DIR"

if [ "$DRY_RUN" = 1 ]; then
  extra=(); [ "$PRECOMPILE" = 1 ] && extra=(--precompile)
  "$PYTHON" launchers/train_trn1.py --dry_run "${extra[@]}" --nnodes "$NNODES" --master_addr "$HEAD_NODE" \
    --neuron_config "$NEURON_CONFIG" --output_dir "$OUTPUT_DIR" --resume_from auto "${ARGS[@]}"
  i=0
  for host in $HOSTS; do
    echo "node $i ($host): ${TORCHRUN[*]} --node_rank $i ${TRAIN[*]}"
    i=$((i + 1))
  done
  exit 0
fi

# one torchrun per node; SLURM_NODEID is the node rank (expanded on each node)
run_on_nodes() {
  srun --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks-per-node=1 bash -c \
    "$(printf '%q ' "$@" | sed 's/__NODE_RANK__/$SLURM_NODEID/')"
}
if [ "$PRECOMPILE" = 1 ]; then   # same node count: the data-parallel size shapes the graphs
  echo "[$(date -Is)] pre-compiling with neuron_parallel_compile ($PRECOMPILE_STEPS steps)"
  run_on_nodes neuron_parallel_compile "${TORCHRUN[@]}" --node_rank __NODE_RANK__ "${TRAIN[@]}" \
    --max_steps "$PRECOMPILE_STEPS" --save_steps 0 --eval_steps 0 --output_dir "$OUTPUT_DIR/precompile"
fi
run_on_nodes "${TORCHRUN[@]}" --node_rank __NODE_RANK__ "${TRAIN[@]}"
