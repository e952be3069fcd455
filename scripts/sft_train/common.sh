# Shared by the *_sft_*.sh scripts; not meant to be run by itself.
# Paths are relative to the folder you run a script from, as in the seed scripts: each task
# keeps its data in ./sft_data_<task> and its model in ./sft_model_<task> (see task_folders).
# Variables (all optional):
#   MODEL_PATH    model that collects (hf backend) and is fine-tuned; empty = the tiny built-in model
#   POLICY        hf (default) | expert | openai — who plays the agents while collecting
#   GPU_num       GPUs for training; > 1 launches `accelerate launch` with configs/accelerate/$ACCELERATE.yaml
#   ACCELERATE    ddp (default) | fsdp2 | zero3
#   NUM_EPISODES  episodes to collect (default 100)
#   RUN_NAME      collection run name (default: start time); the same name resumes
# Extra key=value arguments to a script are passed on to pettingllms, after the script's own,
# so they win: training.sft_data_dir=DIR and training.sft_config.output_dir=DIR move the folders.
set -euo pipefail
# No `cd`: ./sft_data_<task> must land where the user runs the script. Only files of this
# repository (the venv, configs/accelerate) are found through REPO.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

PETTINGLLMS=${PETTINGLLMS:-}
if [ -z "$PETTINGLLMS" ]; then
  if [ -x "$REPO/.venv/bin/pettingllms" ]; then PETTINGLLMS=$REPO/.venv/bin/pettingllms; else PETTINGLLMS=pettingllms; fi
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

data_args=() model_dir_args=()
task_folders() {  # task_folders TASK: data in ./sft_data_TASK, the model in ./sft_model_TASK
  data_args=("training.sft_data_dir=./sft_data_$1")
  model_dir_args=("training.sft_config.output_dir=./sft_model_$1")
}

collect() {  # collect ENV_ARGS... -> writes <sft_data_dir>/sft_data_$RUN_NAME.jsonl
  "$PETTINGLLMS" collect policy="$POLICY" "${model_args[@]}" "${data_args[@]}" \
    training.sft_num_episodes="$NUM_EPISODES" training.run_name="$RUN_NAME" "$@"
}

train() {  # train KEY=VALUE... ; distributed when GPU_num > 1
  if [ "$GPU_num" -gt 1 ]; then
    "$PYTHON" -m accelerate.commands.launch --config_file "$REPO/configs/accelerate/$ACCELERATE.yaml" \
      --num_processes "$GPU_num" -m pettingllms train \
      "${model_args[@]}" "${data_args[@]}" "${model_dir_args[@]}" "$@"
  else
    "$PETTINGLLMS" train "${model_args[@]}" "${data_args[@]}" "${model_dir_args[@]}" "$@"
  fi
}
