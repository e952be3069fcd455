"""The settings of a run: one dataclass per concern, a help string per field, each checking its own values.

OmegaConf uses these dataclasses as a structured config (`pettingllms.config.load`); `pettingllms
keys` prints every field with its default and help. A dataclass checks its values in `check(key)`,
where `key` is its place in the config (`policies.teacher`), so that a mistake is reported with
the key the user typed; `Config.__post_init__` runs the checks of the whole tree once it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pettingllms.config.sft import SFTSettings, require

BACKENDS = ("hf", "openai", "expert")
STATEFUL_ENV = "stateful_env"
STATEFUL_BENCHMARKS = ("sokoban", "plan_path", "sudoku")
"""`env.name=stateful_env env.benchmark=B` (the seed scripts' words) is env B itself."""
STATEFUL_CHOICES = "'sokoban', 'plan_path' or 'sudoku'"
MAX_EPISODES = 10_000_000
"""The most episodes one run may plan (episode ids and the ledger stay manageable)."""


def _help(text: str, default: Any = None, factory: Any = None, backends: tuple[str, ...] = ()) -> Any:
    metadata = {"help": text, "backends": backends}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class EnvConfig:
    name: str = _help("Registered environment (see `pettingllms envs`).", "sokoban")
    max_turns: int | None = _help("Rounds per episode (each agent replies once a round); None = the env's default.")
    dataset: str | None = _help(
        "Task source for dataset envs: 'humaneval', 'generated', or a local JSONL/Parquet path."
    )
    shuffle: bool = _help("Walk the dataset in a seeded random order instead of file order.", False)
    split: str = _help("'train' or 'test': the two use seed ranges that never overlap.", "train")
    kwargs: dict[str, Any] = _help("Other constructor arguments of the env, e.g. env.kwargs.num_boxes=2.", factory=dict)
    imports: list[str] = _help(
        "Python modules that register your own environments, imported before the env is looked up; "
        "written env.import=my_pkg.my_envs (several: a list, or commas).",
        factory=list,
    )
    benchmark: str | None = _help("With env.name=stateful_env: the planning game, 'sokoban', 'plan_path' or 'sudoku'.")

    def check(self, key: str = "env") -> None:
        if self.benchmark is not None:
            require(self.benchmark in STATEFUL_BENCHMARKS, f"{key}.benchmark", self.benchmark, STATEFUL_CHOICES)
        require(self.split in ("train", "test"), f"{key}.split", self.split, "'train' or 'test'")
        require(self.max_turns is None or self.max_turns > 0, f"{key}.max_turns", self.max_turns, "an integer > 0")


@dataclass
class PolicyConfig:
    """Who writes the replies. Fields marked with a backend apply to that backend only."""

    # > Every backend
    name: str = _help("The policy_name written into records.", "shared_model")
    backend: str = _help("'hf' (local transformers model), 'openai' (OpenAI-compatible server) or 'expert'.", "hf")
    temperature: float = _help("Sampling temperature (0 = greedy).", 1.0)
    top_p: float = _help("Nucleus sampling.", 1.0)
    max_tokens: int = _help("Most new tokens per reply.", 256)
    stop: list[str] = _help("Extra stop strings.", factory=list)
    enable_thinking: bool | None = _help("Reasoning switch passed as chat_template_kwargs.enable_thinking.")
    model_path: str | None = _help(
        "hf: model folder, cached Hub id or LoRA adapter folder (None = the tiny built-in model). "
        "openai completions mode: the tokenizer that renders the chat template.",
        backends=("hf", "openai"),
    )
    # > hf
    device: str = _help("'auto', 'cpu', 'cuda', 'cuda:1'...", "auto", backends=("hf",))
    dtype: str = _help("'auto', 'float32', 'bfloat16', 'float16'.", "auto", backends=("hf",))
    max_batch_size: int = _help("Most requests batched into one generate call.", 16, backends=("hf",))
    torch_threads: int | None = _help(
        "CPU threads for torch; None: one for a small model on the CPU unless OMP_NUM_THREADS is set.",
        backends=("hf",),
    )
    # > openai
    base_url: str | None = _help("Server URL, e.g. http://127.0.0.1:8000/v1.", backends=("openai",))
    base_urls: list[str] = _help(
        "Several server URLs; requests spread across them.", factory=list, backends=("openai",)
    )
    model: str | None = _help("The model name the server knows.", backends=("openai",))
    api_key_env: str | None = _help(
        "The environment variable holding the API key (never written to files); None sends no key, "
        "as local servers expect.",
        backends=("openai",),
    )
    mode: str = _help(
        "'chat' (server applies the template) or 'completions' (applied here).", "chat", backends=("openai",)
    )
    max_concurrency: int = _help("Most requests in flight at once.", 32, backends=("openai",))
    balance: str = _help(
        "How requests spread over base_urls: 'least_in_flight' or 'round_robin'.",
        "least_in_flight",
        backends=("openai",),
    )
    extra_body: dict[str, Any] = _help(
        "More fields for every request body (server-specific options).", factory=dict, backends=("openai",)
    )
    timeout_s: float = _help("Read timeout of one request, seconds.", 120.0, backends=("openai",))
    connect_timeout_s: float = _help("Connect timeout, seconds.", 10.0, backends=("openai",))
    max_retries: int = _help(
        "Retries on 429/5xx/timeouts/connection errors/malformed answers, with backoff.", 4, backends=("openai",)
    )
    # > expert
    error_rate: float = _help(
        "Share of episodes the expert plays wrong, so runs contain failures.", 0.0, backends=("expert",)
    )

    def check(self, key: str = "policy") -> None:
        require(self.backend in BACKENDS, f"{key}.backend", self.backend, "'hf', 'openai' or 'expert'")
        require(0.0 <= self.error_rate <= 1.0, f"{key}.error_rate", self.error_rate, "a number in [0, 1]")
        require(self.mode in ("chat", "completions"), f"{key}.mode", self.mode, "'chat' or 'completions'")
        require(self.max_tokens > 0, f"{key}.max_tokens", self.max_tokens, "an integer > 0")
        require(self.temperature >= 0, f"{key}.temperature", self.temperature, "a number >= 0")
        require(0 < self.top_p <= 1, f"{key}.top_p", self.top_p, "a number in (0, 1]")
        require(self.max_batch_size > 0, f"{key}.max_batch_size", self.max_batch_size, "an integer > 0")
        if self.torch_threads is not None:
            require(self.torch_threads > 0, f"{key}.torch_threads", self.torch_threads, "an integer > 0")
        require(self.max_concurrency > 0, f"{key}.max_concurrency", self.max_concurrency, "an integer > 0")
        require(self.max_retries >= 0, f"{key}.max_retries", self.max_retries, "an integer >= 0")
        for name in ("timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, f"{key}.{name}", value, "a finite number > 0")
        require(
            self.balance in ("least_in_flight", "round_robin"),
            f"{key}.balance",
            self.balance,
            "'least_in_flight' or 'round_robin'",
        )
        require(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            f"{key}.dtype",
            self.dtype,
            "'auto', 'float32', 'bfloat16' or 'float16'",
        )


@dataclass
class AgentConfig:
    policy: str | None = _help("Name of the policy (in `policies`) that plays this agent; None = the shared `policy`.")
    trainable: bool | None = _help(
        "False: the agent takes part but its turns are never written as training records. None: the env's "
        "default (trainable, except agents the env simulates, such as consult_env's patient)."
    )
    temperature: float | None = _help("Overrides the policy's temperature for this agent.")
    top_p: float | None = _help("Overrides the policy's top_p for this agent.")
    max_tokens: int | None = _help("Overrides the policy's max_tokens for this agent.")
    stop: list[str] | None = _help("Overrides the policy's stop strings for this agent.")

    def check(self, key: str) -> None:
        require(self.temperature is None or self.temperature >= 0, f"{key}.temperature", self.temperature, ">= 0")
        require(self.top_p is None or 0 < self.top_p <= 1, f"{key}.top_p", self.top_p, "a number in (0, 1]")
        require(self.max_tokens is None or self.max_tokens > 0, f"{key}.max_tokens", self.max_tokens, "an integer > 0")


@dataclass
class TrainingConfig:
    sft_num_episodes: int = _help("Episodes to collect (in total, counting a resumed run's earlier ones).", 100)
    only_success: bool = _help("Keep only turns of successful episodes (or agents, with collect_mode=agent).", True)
    collect_mode: str = _help("'env': success is the episode's; 'agent': each agent's own success.", "env")
    run_sft_training: bool = _help("In `run`: train after collecting.", True)
    sft_data_dir: str = _help("Where data files go.", "./sft_data")
    run_name: str | None = _help("Name of the collection run (default: start time); the same name resumes it.")
    num_samples_per_task: int = _help("Rollouts per task (episode i is task i // n, sample i % n).", 1)
    min_successes_per_task: int | None = _help(
        "Sample each task until it has this many successful episodes (or max_samples_per_task attempts); "
        "set both together. None: every task plays num_samples_per_task samples."
    )
    max_samples_per_task: int | None = _help(
        "With min_successes_per_task: the most samples a task plays; episode i is task i // n, sample i % n, "
        "and sft_num_episodes bounds the episodes played."
    )
    rollout_concurrency: int = _help("Most episodes in flight at once.", 16)
    num_shards: int = _help(
        "Split the run's episodes over this many collectors (a Slurm array, an indexed Job); each writes "
        "the run's files under its own name <run_name>.shard-<i>-of-<n>.",
        1,
    )
    shard_index: int = _help("Which shard this collector plays: 0 .. num_shards - 1.", 0)
    seed: int = _help("First task seed (>= 0); task k uses seed + k (plus the split's offset).", 0)
    dedup: bool = _help("Drop a record whose (agent, prompt, response) was already kept.", False)
    max_records_per_task: int | None = _help("Keep at most this many records per task.")
    near_dedup_threshold: float | None = _help(
        "Drop a reply near-identical to an already kept reply of the same task and agent: the Jaccard similarity "
        "of their word 3-grams (lowercased, whitespace collapsed) is at least this, in (0, 1], e.g. 0.9. None: off."
    )
    drop_truncated: bool = _help(
        "Drop replies cut off by the token limit (the turn's finish_reason is 'length', as hf and openai report it).",
        False,
    )
    drop_crashed_programs: bool = _help(
        "Drop turns whose own program crashed, timed out or was stopped by the sandbox, as the env's turn details "
        "record it (the tool agent of sokoban/plan_path/sudoku and math_env; code_env's solution on the hidden "
        "tests and tests on the reference, where a failed assert is a wrong answer, not a crash).",
        False,
    )
    max_reply_chars: int | None = _help(
        "Drop replies longer than this many characters (characters, not tokens: counted without a tokenizer). "
        "None: no limit."
    )
    max_invalid_actions: int | None = _help(
        "Drop every turn of an episode with more than this many invalid replies (valid=false, all agents "
        "together); 0 keeps only episodes without one. None: no limit."
    )
    min_reward: float | None = _help(
        "Keep only turns whose reward is at least this: the combined reward (reward.weights) of a judged turn, "
        "else the env's reward. A turn the judge could not score is dropped (judge_error) when reward.weights.judge "
        "> 0. None: no minimum. (training.sft_config.min_reward selects among records already written.)"
    )
    retry_infra_errors: bool = _help(
        "On resume, run again the episodes that ended in an infrastructure error (server down, timeout, "
        "malformed answer, sandbox set-up), never those the model failed.",
        True,
    )
    eval_after: bool | None = _help(
        "In `run`: evaluate the starting model and the trained one on the test split (eval.*) and show both; "
        "None: when the env has a test split.",
    )
    train_data_path: Any = _help(
        "train: data files or globs (a string or a list); default: the records of training.run_name, "
        "else the newest sft_data_*.jsonl."
    )
    sft_config: SFTSettings = _help("Training settings.", factory=SFTSettings)

    def check(self, key: str = "training") -> None:
        require(
            0 < self.sft_num_episodes <= MAX_EPISODES,
            f"{key}.sft_num_episodes",
            self.sft_num_episodes,
            f"an integer in 1..{MAX_EPISODES:,}",
        )
        for name in ("num_samples_per_task", "rollout_concurrency"):
            require(getattr(self, name) > 0, f"{key}.{name}", getattr(self, name), "an integer > 0")
        require(self.num_shards > 0, f"{key}.num_shards", self.num_shards, "an integer > 0")
        require(
            0 <= self.shard_index < self.num_shards, f"{key}.shard_index", self.shard_index, f"0..{self.num_shards - 1}"
        )
        if self.num_shards > 1 and self.run_name is None:
            require(False, f"{key}.run_name", None, "a name shared by every shard when training.num_shards > 1")
        require(self.collect_mode in ("env", "agent"), f"{key}.collect_mode", self.collect_mode, "'env' or 'agent'")
        self._check_sampling_until_success(key)
        require(self.seed >= 0, f"{key}.seed", self.seed, "an integer >= 0")
        if self.max_records_per_task is not None:
            require(
                self.max_records_per_task > 0,
                f"{key}.max_records_per_task",
                self.max_records_per_task,
                "an integer > 0",
            )
        threshold = self.near_dedup_threshold
        if threshold is not None:
            require(0 < threshold <= 1, f"{key}.near_dedup_threshold", threshold, "a number in (0, 1], or null (off)")
        if self.max_reply_chars is not None:
            require(self.max_reply_chars > 0, f"{key}.max_reply_chars", self.max_reply_chars, "an integer > 0")
        if self.max_invalid_actions is not None:
            require(
                self.max_invalid_actions >= 0, f"{key}.max_invalid_actions", self.max_invalid_actions, "an integer >= 0"
            )
        if self.run_name is not None:
            from pettingllms.runfiles import check_run_name

            check_run_name(self.run_name, f"{key}.run_name")
        if self.min_reward is not None:
            require(math.isfinite(self.min_reward), f"{key}.min_reward", self.min_reward, "a finite number, or null")
        self.sft_config.check(f"{key}.sft_config")

    def _check_sampling_until_success(self, key: str) -> None:
        least, most = self.min_successes_per_task, self.max_samples_per_task
        if least is None and most is None:
            return
        # One without the other has no meaning: how many successes, or how many attempts at most?
        require(
            most is not None, f"{key}.max_samples_per_task", most, f"an integer set with {key}.min_successes_per_task"
        )
        require(
            least is not None, f"{key}.min_successes_per_task", least, f"an integer set with {key}.max_samples_per_task"
        )
        require(least > 0, f"{key}.min_successes_per_task", least, "an integer > 0")
        require(most > 0, f"{key}.max_samples_per_task", most, "an integer > 0")
        require(
            least <= most,
            f"{key}.min_successes_per_task",
            least,
            f"at most {key}.max_samples_per_task={most} (a task cannot succeed more often than it is played)",
        )
        require(
            self.num_samples_per_task in (1, most),
            f"{key}.num_samples_per_task",
            self.num_samples_per_task,
            f"1 (or {most}): with {key}.min_successes_per_task, {key}.max_samples_per_task is the number of samples",
        )


@dataclass
class JudgeConfig(PolicyConfig):
    """The policy that scores turns (`reward.judge.*`): a policy like any other, with a judge's defaults."""

    name: str = _help("The judge's name, in messages.", "judge")
    backend: str = _help("'openai' (a local vLLM, a hosted teacher) or 'hf' (a local transformers model).", "openai")
    temperature: float = _help("Sampling temperature (0 = greedy: the same turn gets the same score).", 0.0)
    max_tokens: int = _help("Most new tokens of the judge's reply (its reasoning, then the score).", 512)

    def check(self, key: str = "reward.judge") -> None:
        super().check(key)
        require(self.backend in ("openai", "hf"), f"{key}.backend", self.backend, "'openai' or 'hf'")
        if self.backend == "openai" and not (self.base_url or self.base_urls):
            require(False, f"{key}.base_url", None, "the judge server's URL, e.g. http://127.0.0.1:8000/v1")


@dataclass
class RewardConfig:
    """Judged rewards: a judge scores candidate turns in [0, 1], mixed with the env's reward by `weights`."""

    judge: JudgeConfig | None = _help(
        "The judge, e.g. reward.judge.base_url=http://127.0.0.1:8000/v1 reward.judge.model=NAME (any policy key); "
        "None: no judge."
    )
    unit: str = _help(
        "'turn': one judge call per turn that could be kept; 'episode': one call per episode, its score given to "
        "each such turn.",
        "turn",
    )
    rubric: str | None = _help(
        "The judge's prompt, a template with {task} {agent} {prompt} {response} {transcript} {success} {reward}; "
        "None: the env's built-in rubric (pettingllms.judge.RUBRICS)."
    )
    rubric_file: str | None = _help("A file holding the rubric template (instead of reward.rubric).")
    weights: dict[str, float] = _help(
        "combined reward = (rule * env reward + judge * judge score) / (rule + judge); keys 'rule' and 'judge', "
        "values >= 0, sum > 0.",
        factory=lambda: {"rule": 1.0, "judge": 0.0},
    )
    concurrency: int = _help("Most judge calls in flight at once, over all episodes.", 16)

    def check(self, key: str = "reward") -> None:
        require(self.unit in ("turn", "episode"), f"{key}.unit", self.unit, "'turn' or 'episode'")
        require(self.concurrency > 0, f"{key}.concurrency", self.concurrency, "an integer > 0")
        if self.rubric is not None and self.rubric_file is not None:
            require(False, f"{key}.rubric_file", self.rubric_file, f"null when {key}.rubric is set (give one of them)")
        if self.rubric is not None:
            from pettingllms.judge import check_rubric

            check_rubric(self.rubric, f"{key}.rubric")
        check_weights(self.weights, f"{key}.weights")
        if self.judge is not None:
            self.judge.check(f"{key}.judge")
        elif self.weights.get("judge", 0.0) > 0:
            require(False, f"{key}.weights.judge", self.weights["judge"], f"0 without a judge (set {key}.judge.*)")


def check_weights(weights: dict[str, float], key: str = "reward.weights") -> None:
    """Raise ConfigError unless `weights` has only the keys 'rule' and 'judge', each >= 0, with a positive sum."""
    for name, value in weights.items():
        require(name in ("rule", "judge"), f"{key}.{name}", value, "only the keys 'rule' and 'judge'")
        require(math.isfinite(value) and value >= 0, f"{key}.{name}", value, "a finite number >= 0")
    require(sum(weights.values()) > 0, key, dict(weights), "weights with a positive sum, e.g. {rule: 0.6, judge: 0.4}")


@dataclass
class EvalConfig:
    """`pettingllms eval`, and the before/after evaluation of `run` (training.eval_after)."""

    num_episodes: int = _help("Test episodes to play.", 50)
    num_samples_per_task: int = _help("Samples per test task; above 1, pass@k is reported for k = 1..n.", 1)
    greedy: bool = _help("Temperature 0 for every policy (with one sample per task).", True)
    split: str = _help(
        "'test' (tasks collection never sees) or 'train' (for a separate task file given as env.dataset).", "test"
    )
    seed: int = _help("First test task (the test split's own seeds start at a fixed offset).", 0)
    output_dir: str = _help("Where evaluation files go: eval_<run>.json and the episodes (rollouts).", "./sft_eval")
    run_name: str | None = _help("Name of the evaluation run (default: start time); the same name resumes it.")
    concurrency: int = _help("Most episodes in flight at once.", 16)
    max_tokens: int | None = _help("Most new tokens per reply of an evaluated model; None: the policy's max_tokens.")

    def check(self, key: str = "eval") -> None:
        require(self.max_tokens is None or self.max_tokens > 0, f"{key}.max_tokens", self.max_tokens, "an integer > 0")
        for name in ("num_episodes", "num_samples_per_task", "concurrency"):
            require(getattr(self, name) > 0, f"{key}.{name}", getattr(self, name), "an integer > 0")
        require(self.split in ("train", "test"), f"{key}.split", self.split, "'train' or 'test'")
        require(self.seed >= 0, f"{key}.seed", self.seed, "an integer >= 0")
        if self.run_name is not None:
            from pettingllms.runfiles import check_run_name

            check_run_name(self.run_name, f"{key}.run_name")


@dataclass
class IterateConfig:
    """`pettingllms iterate`: rounds of collect -> train -> evaluate."""

    rounds: int = _help("Rounds to run (`rounds=K` on the command line).", 2)
    output_dir: str = _help(
        "Where each round's folder (data/, model/, eval/) and iterate_summary.json go.", "./sft_iterate"
    )
    from_base: bool = _help(
        "True: each round trains the base model on every round's kept data so far; False: it continues the "
        "previous round's model on the new data only.",
        True,
    )
    patience: int = _help("Stop when success has not improved for this many rounds (0: run every round).", 0)

    def check(self, key: str = "iterate") -> None:
        require(self.rounds > 0, f"{key}.rounds", self.rounds, "an integer > 0")
        require(self.patience >= 0, f"{key}.patience", self.patience, "an integer >= 0")


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    policies: dict[str, PolicyConfig] = _help("Extra named policies for role-specialized agents.", factory=dict)
    agents: dict[str, AgentConfig] = _help("Per-agent settings: policy, trainable, sampling.", factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    iterate: IterateConfig = field(default_factory=IterateConfig)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Check every value of the tree; raise ConfigError naming the first wrong key."""
        self.env.check("env")
        self.policy.check("policy")
        for name, policy in self.policies.items():
            policy.check(f"policies.{name}")
        for agent, settings in self.agents.items():
            settings.check(f"agents.{agent}")
            if settings.policy is not None and settings.policy not in self.policies_by_name():
                require(
                    False,
                    f"agents.{agent}.policy",
                    settings.policy,
                    f"a defined policy: {', '.join(self.policies_by_name())} (add it under policies.<name>)",
                )
        self.training.check("training")
        self.reward.check("reward")
        self.eval.check("eval")
        self.iterate.check("iterate")

    def policies_by_name(self) -> dict[str, PolicyConfig]:
        """The shared policy (under its own `name`) and the extra named ones."""
        return {self.policy.name: self.policy, **self.policies}

    def trains(self, agent: str, simulated: tuple[str, ...] = ()) -> bool:
        """Whether `agent`'s turns become training records: its own setting, else not when the env simulates it."""
        settings = self.agents.get(agent)
        if settings is not None and settings.trainable is not None:
            return settings.trainable
        return agent not in simulated

    def policy_of(self, agent: str) -> str:
        """The name of the policy that plays `agent`: its own `agents.<agent>.policy`, else the shared one."""
        settings = self.agents.get(agent)
        return (settings.policy if settings else None) or self.policy.name
