#!/usr/bin/env bash
# Fine-tune on data collected earlier into ./sft_model_math: TRAIN_DATA_PATH (files or globs), else the
# newest ./sft_data_math/sft_data_*.jsonl (paths under the folder you run this from;
# training.sft_data_dir=DIR / training.sft_config.output_dir=DIR move them).
#   MODEL_PATH=/models/Qwen3-1.7B bash scripts/sft_train/math_sft_train_only.sh
#   TRAIN_DATA_PATH=sft_data_math/sft_data_20260101_120000.jsonl MODEL_PATH=/models/Qwen3-1.7B \
#     bash scripts/sft_train/math_sft_train_only.sh
source "$(dirname "$0")/common.sh"
task_folders math
train_data_args=()
[ -n "${TRAIN_DATA_PATH:-}" ] && train_data_args+=("training.train_data_path=$TRAIN_DATA_PATH")
train "${train_data_args[@]}" "$@"
