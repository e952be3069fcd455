#!/usr/bin/env bash
# The whole code flow, small: a few expert episodes (some played wrong), one epoch on the tiny model.
# Data go to ./sft_data_code/quick_test and the model to ./sft_model_code_quick_test, folders of their own
# so that code_sft_train_only.sh never takes a smoke test's data for the newest real data.
#   bash scripts/sft_train/code_sft_quick_test.sh
#   MODEL_PATH=/models/Qwen3-1.7B bash scripts/sft_train/code_sft_quick_test.sh   # same flow, real model
source "$(dirname "$0")/common.sh"
"$PETTINGLLMS" quick-test env.name=code_env env.dataset=humaneval "${model_args[@]}" \
  training.sft_data_dir=./sft_data_code/quick_test training.sft_config.output_dir=./sft_model_code_quick_test "$@"
