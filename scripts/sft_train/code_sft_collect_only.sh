#!/usr/bin/env bash
# Collect code episodes and write ./sft_data_code/sft_data_<run>.jsonl + stats (under the folder
# you run this from; training.sft_data_dir=DIR puts them elsewhere); no training.
#   MODEL_PATH=/models/Qwen3-1.7B NUM_EPISODES=200 bash scripts/sft_train/code_sft_collect_only.sh
#   POLICY=expert bash scripts/sft_train/code_sft_collect_only.sh          # no model needed
source "$(dirname "$0")/common.sh"
task_folders code
collect env.name=code_env env.dataset=humaneval "$@"
