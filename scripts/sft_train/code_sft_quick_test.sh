#!/usr/bin/env bash
# The whole code flow, small: a few expert episodes (some played wrong), one epoch on the tiny model.
#   bash scripts/sft_train/code_sft_quick_test.sh
#   MODEL_PATH=/models/Qwen3-1.7B bash scripts/sft_train/code_sft_quick_test.sh   # same flow, real model
source "$(dirname "$0")/common.sh"
"$PETTINGLLMS" quick-test env.name=code_env env.dataset=humaneval "${model_args[@]}" "$@"
