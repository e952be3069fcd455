# Shared by the *_sft_*.sh scripts; not meant to be run by itself.
# Variables (all optional):
#   MODEL_PATH    model that collects (hf backend) and is fine-tuned; empty = the tiny built-in model
#   POLICY        hf (default) | expert | openai — who plays the agents while collecting
#   GPU_num       GPUs for training; > 1 launches `accelerate launch` with configs/accelerate/$ACCELERATE.yaml
#   ACCELERATE    ddp (default) | fsdp2 | zero3
#   NUM_EPISODES  episodes to collect (default 100)
#   RUN_NAME      collection run name (default: start time); the same name resumes
# Extra key=value arguments to a script are passed on to pettingllms.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PETTINGLLMS=${PETTINGLLMS:-}
if [ -z "$PETTINGLLMS" ]; then
  if [ -x .venv/bin/pettingllms ]; then PETTINGLLMS=.venv/bin/pettingllms; else PETTINGLLMS=pettingllms; fi
fi
PYTHON=$(dirname "$(command -v "$PETTINGLLMS")")/python
MODEL_PATH=${MODEL_PATH:-}
POLICY=${POLICY:-hf}
GPU_num=${GPU_num:-1}
ACCELERATE=${ACCELERATE:-ddp}
NUM_EPISODES=${NUM_EPISODES:-100}
RUN_NAME=${RUN_NAME:-$(date +%Y%m%d_%H%M%S)}

model_args=()
if [ -n "$MODEL_PATH" ]; then
  model_args+=("training.sft_config.model_name_or_path=$MODEL_PATH")
  [ "$POLICY" = "hf" ] && model_args+=("policy.model_path=$MODEL_PATH")
fi

collect() {  # collect ENV_ARGS... -> writes sft_data/sft_data_$RUN_NAME.jsonl
  "$PETTINGLLMS" collect policy="$POLICY" "${model_args[@]}" \
    training.sft_num_episodes="$NUM_EPISODES" training.run_name="$RUN_NAME" "$@"
}

train() {  # train KEY=VALUE... ; distributed when GPU_num > 1
  if [ "$GPU_num" -gt 1 ]; then
    "$PYTHON" -m accelerate.commands.launch --config_file "configs/accelerate/$ACCELERATE.yaml" \
      --num_processes "$GPU_num" -m pettingllms train "${model_args[@]}" "$@"
  else
    "$PETTINGLLMS" train "${model_args[@]}" "$@"
  fi
}
