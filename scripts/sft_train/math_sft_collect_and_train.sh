#!/usr/bin/env bash
# Collect math episodes, keep the successful ones, then fine-tune on them.
# Data goes to ./sft_data_math, the model to ./sft_model_math (under the folder you run this from);
# training.sft_data_dir=DIR / training.sft_config.output_dir=DIR put them elsewhere.
#   MODEL_PATH=/models/Qwen3-1.7B GPU_num=1 bash scripts/sft_train/math_sft_collect_and_train.sh
#   NUM_EPISODES=500 GPU_num=4 bash scripts/sft_train/math_sft_collect_and_train.sh training.sft_config.lora_r=32
source "$(dirname "$0")/common.sh"
task_folders math
collect env.name=math_env "$@"
train training.run_name="$RUN_NAME" "$@"   # trains on this run's records
