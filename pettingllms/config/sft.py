"""Settings of the training stage: the `training.sft_config.*` keys.

`SFTSettings` is a plain dataclass so that OmegaConf can use it as a structured config
(the top-level config nests it under `training.sft_config`); every field therefore has an
OmegaConf-friendly type (str, int, float, bool, `X | None`, `list[str]`) and a help string.
`pettingllms.training.sft` turns it into TRL's `SFTConfig` and PEFT's `LoraConfig`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from pettingllms.exceptions import ConfigError

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)
"""transformers' learning-rate schedules (`SchedulerType`), listed here so that checking
a config does not import transformers."""


KEY = "training.sft_config"
"""Where these settings sit in the config; messages name a setting as `training.sft_config.<field>`."""


def require(ok: bool, key: str, value: Any, accepted: str) -> None:
    """Raise the one-line ConfigError for `key=value` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid; expected {accepted}.")


@dataclass
class SFTSettings:
    """How to fine-tune a model on collected records.

    Data selection (`agents`, `policies`, `env_success`, `min_reward`) reads each record's
    `metadata`; plain `prompt`/`response` rows have none, so any active filter removes them.
    """

    # > What to train
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Model to fine-tune: a local folder or a Hub id already in the local cache. None means the "
            "tiny built-in model (`pettingllms make-tiny-model`)."
        },
    )
    output_dir: str = field(
        default="./sft_model",
        metadata={
            "help": "Where the adapter (or full model), tokenizer, training args, checkpoints and "
            "`training_summary.json` are written. With `per_policy`, one subfolder per policy."
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace what an earlier training wrote to `output_dir`. Without it such a folder is refused "
            "(continue it with `resume_from_checkpoint=last` instead); a non-empty folder that holds no "
            "pettingllms output (no pettingllms_output.json) is refused either way."
        },
    )
    use_lora: bool = field(
        default=True,
        metadata={"help": "Train a LoRA adapter (PEFT). False fine-tunes every weight of the model."},
    )
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={
            "help": "Modules that get an adapter: 'all-linear' (every linear layer except the output head) or a "
            "comma-separated list of module names, e.g. 'q_proj,v_proj'."
        },
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "After training, also write base + adapter as one standalone model to `<output_dir>/merged`."
        },
    )
    per_policy: bool = field(
        default=False,
        metadata={
            "help": "Train one adapter per `metadata.policy_name` (role-specialized agents) into "
            "`<output_dir>/<policy_name>`."
        },
    )

    # > Column names (for data other tools wrote)
    messages_key: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the conversation as a list of {role, content} messages, the last one the "
            "reply. None: 'messages' (or a prompt/response pair)."
        },
    )
    prompt_key: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the prompt (a string becomes one user message, or a list of messages). None: "
            "'prompt'. RAGEN's Parquet: prompt_key=input response_key=output; Alpaca-style JSONL: "
            "prompt_key=instruction response_key=output."
        },
    )
    response_key: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the reply trained on (a string, or a list of messages). None: 'response', "
            "else 'completion'."
        },
    )
    reward_key: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the reward `min_reward` compares with. None: `metadata.reward`, else a "
            "top-level 'reward' (AgentRL-style rows); a top-level 'success' likewise stands in for a missing "
            "`metadata.env_success`."
        },
    )

    # > Which records
    agents: list[str] = field(
        default_factory=list,
        metadata={"help": "Keep only records whose `metadata.agent_name` is listed. Empty keeps all agents."},
    )
    policies: list[str] = field(
        default_factory=list,
        metadata={"help": "Keep only records whose `metadata.policy_name` is listed. Empty keeps all policies."},
    )
    env_success: bool | None = field(
        default=None,
        metadata={
            "help": "Keep only records whose `metadata.env_success` equals this. None applies no filter: "
            "collection with `training.only_success=true` has already kept successful episodes only."
        },
    )
    min_reward: float | None = field(
        default=None,
        metadata={
            "help": "Keep only records whose `metadata.combined_reward` (when a judge scored them, else "
            "`metadata.reward`) is at least this. None applies no filter."
        },
    )
    thinking: str = field(
        default="keep",
        metadata={
            "help": "'keep' trains on the reply as written; 'strip' trains on the answer alone: `<think>...</think>` "
            "blocks are removed and an `<answer>...</answer>` element is unwrapped to its text, other text "
            "is left as written (see `pettingllms.training.data.answer_only`).",
            "choices": ["keep", "strip"],
        },
    )
    max_seq_length: int = field(
        default=2048,
        metadata={
            "help": "Samples longer than this many tokens (prompt + reply, chat template applied) are dropped and "
            "counted, never truncated: a cut reply would teach the model to stop mid-answer."
        },
    )
    eval_split: float = field(
        default=0.0,
        metadata={"help": "Fraction of the selected samples held out for evaluation (0 holds out none)."},
    )
    eval_data_path: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data: a file or glob, or several separated by commas. The same selection applies. "
            "Used instead of `eval_split`."
        },
    )

    # > How to train
    num_train_epochs: float = field(default=3, metadata={"help": "Passes over the training samples."})
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimizer steps; overrides `num_train_epochs` when positive."},
    )
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Samples per device per forward pass."})
    gradient_accumulation_steps: int = field(
        default=8, metadata={"help": "Forward passes accumulated before each optimizer step."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule, as in transformers: 'linear', 'cosine', 'constant', ..."},
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the steps spent warming the lr up."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: less memory, about 20% slower."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision. None decides: on when the GPU supports it, never on CPU. Pass "
            "false to force fp32."
        },
    )
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads for torch. None: one for a small model (< 50M parameters) on the CPU unless "
            "OMP_NUM_THREADS is set (more threads made the tiny model 2-8x slower on 2 cores), else torch's default."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for adapter initialisation, shuffling and the eval split."})

    # > Logging and checkpoints
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every this many steps."})
    eval_steps: int = field(
        default=0,
        metadata={"help": "Evaluate every this many steps. 0 evaluates once, at the end of training."},
    )
    save_steps: int = field(default=500, metadata={"help": "Write a checkpoint every this many steps."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep at most this many checkpoints (None keeps all)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume from a checkpoint folder, or 'last' for the newest checkpoint in `output_dir`. Never "
            "automatic: a rerun into a folder that holds an unfinished training is refused and names this key."
        },
    )
    report_to: str = field(
        default="none",
        metadata={"help": "Where transformers reports metrics: 'none', 'tensorboard', 'wandb', 'all', ..."},
    )

    def check(self, key: str = KEY) -> None:
        """Check the values types alone cannot; raise ConfigError naming `key.<field>`."""
        for name in (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "lora_r",
            "lora_alpha",
            "max_seq_length",
            "logging_steps",
        ):
            require(getattr(self, name) > 0, f"{key}.{name}", getattr(self, name), "an integer > 0")
        require(self.num_train_epochs > 0, f"{key}.num_train_epochs", self.num_train_epochs, "a number > 0")
        if self.torch_threads is not None:
            require(self.torch_threads > 0, f"{key}.torch_threads", self.torch_threads, "an integer > 0")
        require(self.learning_rate > 0, f"{key}.learning_rate", self.learning_rate, "a number > 0")
        require(0 <= self.lora_dropout < 1, f"{key}.lora_dropout", self.lora_dropout, "a number in [0, 1)")
        require(self.thinking in ("keep", "strip"), f"{key}.thinking", self.thinking, "'keep' or 'strip'")
        for name in ("messages_key", "prompt_key", "response_key", "reward_key"):
            column = getattr(self, name)
            require(column is None or column.strip() != "", f"{key}.{name}", column, "a column name, or null")
        require(
            not (self.messages_key and (self.prompt_key or self.response_key)),
            f"{key}.messages_key",
            self.messages_key,
            "null when prompt_key or response_key is set (a row is a conversation or a prompt/response pair)",
        )
        require(
            not (self.overwrite and self.resume_from_checkpoint),
            f"{key}.overwrite",
            self.overwrite,
            "false when resume_from_checkpoint is set (resuming keeps the folder)",
        )
        require(
            self.lr_scheduler_type in SCHEDULERS,
            f"{key}.lr_scheduler_type",
            self.lr_scheduler_type,
            ", ".join(SCHEDULERS),
        )
        for tracker in (name.strip() for name in self.report_to.split(",")):
            if tracker not in ("none", "all") and importlib.util.find_spec(tracker) is None:
                raise ConfigError(f"{key}.report_to={tracker!r} needs the {tracker} package: pip install {tracker}")
