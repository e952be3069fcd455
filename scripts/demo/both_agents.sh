#!/usr/bin/env bash
# Demo (b): both agents learn from the expert, on a 2-core CPU with the tiny built-in model.
# The expert's tool writes the "compact" program (the puzzle copied verbatim into a triple-quoted
# string, then a short solver), which a model can learn by copying; env.kwargs.empty_cell=0 draws
# empty cells as 0, so every puzzle is the same number of tokens (with '.', the tokenizer's " ."
# merges make it vary, and the tiny model does not learn the copy); a fifth of the episodes are
# recovery episodes (wrong in round 1, right in round 2), so the data shows later rounds and
# their history, and training.sft_config.min_reward=1 keeps the wrong round-1 turns out of
# training. At evaluation the trained model plays both agents. Prints the before/after table
# on 50 test-split tasks.
#   bash scripts/demo/both_agents.sh                           # into ./demo_both_agents
#   OUT=/tmp/demo bash scripts/demo/both_agents.sh training.sft_config.max_steps=3000
# Extra key=value arguments go to `pettingllms run`, after the script's own, so they win.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-./demo_both_agents}

# policy.max_tokens=400: the tool's program is about 320 tokens (the default 256 would cut it).
timed_run env.name=sudoku env.kwargs.empty_cell=0 env.kwargs.recovery_rate=0.2 policy=expert policy.max_tokens=400 \
  training.sft_num_episodes=1500 training.rollout_concurrency=16 \
  training.sft_data_dir="$OUT" training.run_name=both_agents \
  training.sft_config.min_reward=1 \
  training.sft_config.use_lora=false training.sft_config.learning_rate=3e-3 \
  training.sft_config.per_device_train_batch_size=4 training.sft_config.gradient_accumulation_steps=1 \
  training.sft_config.max_steps=2000 training.sft_config.logging_steps=50 training.sft_config.save_steps=100000 \
  training.sft_config.output_dir="$OUT/model" training.sft_config.overwrite=true \
  training.eval_after=true eval.num_episodes=50 eval.output_dir="$OUT/eval" \
  "$@"
