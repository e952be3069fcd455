#!/usr/bin/env bash
# Fine-tune on data collected earlier: TRAIN_DATA_PATH (files or globs), else the newest sft_data/sft_data_*.jsonl.
#   TRAIN_DATA_PATH=sft_data/sft_data_20260101_120000.jsonl MODEL_PATH=/models/Qwen3-1.7B \
#     bash scripts/sft_train/math_sft_train_only.sh
source "$(dirname "$0")/common.sh"
data_args=()
[ -n "${TRAIN_DATA_PATH:-}" ] && data_args+=("training.train_data_path=$TRAIN_DATA_PATH")
train "${data_args[@]}" "$@"
