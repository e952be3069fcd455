#!/usr/bin/env bash
# Demo (a): the planner learns from the expert, on a 2-core CPU with the tiny built-in model.
# The expert plays both agents while collecting; only the planner's turns train the model
# (training.sft_config.agents=[planner]); at evaluation the trained model plays the planner and
# the expert still plays the tool. Prints the before/after table on 50 test-split tasks.
#   bash scripts/demo/planner_only.sh                          # into ./demo_planner_only
#   OUT=/tmp/demo bash scripts/demo/planner_only.sh training.sft_config.max_steps=1000
# Extra key=value arguments go to `pettingllms run`, after the script's own, so they win.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-./demo_planner_only}

# Full fine-tuning at a high learning rate: the 270k-parameter model has no pretrained skill
# to keep, and LoRA on it learns far slower. The loss sits on a plateau (~0.3) until the model
# learns to copy the program's printed `Actions:` line, then drops to ~0.001. When depends on
# the order of the batches (measured: after 250 to 950 steps); 2,000 steps leave room for a late one.
timed_run env.name=sudoku policy=expert \
  training.sft_num_episodes=1500 training.rollout_concurrency=16 \
  training.sft_data_dir="$OUT" training.run_name=planner_only \
  "training.sft_config.agents=[planner]" \
  training.sft_config.use_lora=false training.sft_config.learning_rate=3e-3 \
  training.sft_config.per_device_train_batch_size=4 training.sft_config.gradient_accumulation_steps=1 \
  training.sft_config.max_steps=2000 training.sft_config.logging_steps=50 training.sft_config.save_steps=100000 \
  training.sft_config.output_dir="$OUT/model" training.sft_config.overwrite=true \
  training.eval_after=true eval.num_episodes=50 eval.output_dir="$OUT/eval" \
  "$@"
