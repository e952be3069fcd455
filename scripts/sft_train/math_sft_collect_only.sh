#!/usr/bin/env bash
# Collect math episodes and write ./sft_data_math/sft_data_<run>.jsonl + stats (under the folder
# you run this from; training.sft_data_dir=DIR puts them elsewhere); no training.
#   MODEL_PATH=/models/Qwen3-1.7B NUM_EPISODES=200 bash scripts/sft_train/math_sft_collect_only.sh
#   POLICY=expert bash scripts/sft_train/math_sft_collect_only.sh          # no model needed
source "$(dirname "$0")/common.sh"
task_folders math
collect env.name=math_env "$@"
