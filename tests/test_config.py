from pathlib import Path

import pytest
import yaml

from pettingllms.config import CONFIG_DIR, all_keys, load_config
from pettingllms.exceptions import ConfigError


def test_defaults_match_the_design_table():
    config = load_config([])
    training, sft = config.training, config.training.sft_config
    assert (training.sft_num_episodes, training.only_success, training.run_sft_training) == (100, True, True)
    assert training.sft_data_dir == "./sft_data"
    assert (sft.num_train_epochs, sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (3, 2, 8)
    assert (sft.learning_rate, sft.use_lora, sft.lora_r, sft.lora_alpha) == (5e-5, True, 64, 16)
    assert sft.output_dir == "./sft_model"


def test_seed_script_keys_work_verbatim():
    config = load_config(
        [
            "training.sft_num_episodes=7",
            "training.only_success=false",
            "training.run_sft_training=false",
            "training.sft_data_dir=/tmp/x",
            "env.max_turns=2",
            "training.sft_config.num_train_epochs=1",
            "training.sft_config.per_device_train_batch_size=4",
            "training.sft_config.gradient_accumulation_steps=1",
            "training.sft_config.learning_rate=1e-4",
            "training.sft_config.use_lora=false",
            "training.sft_config.lora_r=8",
            "training.sft_config.lora_alpha=32",
            "training.sft_config.model_name_or_path=/m",
            "training.sft_config.output_dir=/o",
            "training.train_data_path=/d.jsonl",
            "training.run_name=abc",
        ]
    )
    training, sft = config.training, config.training.sft_config
    assert training.sft_num_episodes == 7 and training.only_success is False
    assert training.run_sft_training is False and training.sft_data_dir == "/tmp/x"
    assert config.env.max_turns == 2 and training.run_name == "abc" and training.train_data_path == "/d.jsonl"
    assert (sft.num_train_epochs, sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (1, 4, 1)
    assert (sft.learning_rate, sft.use_lora, sft.lora_r, sft.lora_alpha) == (1e-4, False, 8, 32)
    assert (sft.model_name_or_path, sft.output_dir) == ("/m", "/o")


def test_policy_group_selects_a_yaml_and_overrides_win():
    config = load_config(["policy=expert", "policy.error_rate=0.25"])
    assert config.policy.backend == "expert" and config.policy.error_rate == 0.25


def test_unknown_key_names_it_and_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"Unknown config key 'training.sft_num_episode'.*training.sft_num_episodes"):
        load_config(["training.sft_num_episode=5"])
    with pytest.raises(ConfigError, match=r"'training.sft_config.lora_rank'.*lora_r"):
        load_config(["training.sft_config.lora_rank=8"])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "training.sft_num_episodes=0",
            r"training.sft_num_episodes=0 is invalid; expected an integer in 1\.\.10,000,000",
        ),
        ("training.sft_num_episodes=-3", r"expected an integer in 1\.\."),
        ("training.sft_num_episodes=99999999999", r"expected an integer in 1\.\.10,000,000"),
        ("training.seed=-5", r"training.seed=-5 is invalid; expected an integer >= 0"),
        ("policy.timeout_s=inf", r"policy.timeout_s=inf is invalid; expected a finite number > 0"),
        ("training.run_name=r[1]", r"without path separators, glob characters"),
        ("training.run_name=a*", r"without path separators, glob characters"),
        (
            "training.sft_num_episodes=many",
            r"training.sft_num_episodes: Value 'many' .* could not be converted to Integer",
        ),
        ("policy=../quick_test", r"Unknown policy '../quick_test'"),
        ("training.sft_config.lora_r=0", r"training.sft_config.lora_r=0 is invalid; expected an integer > 0"),
        ("training.sft_config.num_train_epochs=-1", r"num_train_epochs=-1.0 is invalid"),
        ("training.sft_config.thinking=drop", r"expected 'keep' or 'strip'"),
        ("policy.top_p=5", r"policy.top_p=5.0 is invalid; expected a number in \(0, 1\]"),
        ("training.collect_mode=turn", r"expected 'env' or 'agent'"),
        ("policy.backend=vllm", r"expected 'hf', 'openai' or 'expert'"),
        ("policy.error_rate=2", r"expected a number in \[0, 1\]"),
        ("env.split=dev", r"expected 'train' or 'test'"),
        ("training.run_name=a/b", r"training.run_name='a/b' is invalid"),
        ("policy=nope", r"Unknown policy 'nope'.*Available: expert, hf, openai"),
        ("justtext", r"is not key=value"),
        ("agents.tool.policy=missing", r"agents.tool.policy='missing' is invalid; expected a defined policy"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config([override])
    assert "\n" not in str(caught.value)


def test_role_specialized_agents_parse():
    config = load_config(
        [
            "policies.teacher.backend=expert",
            "agents.tool.policy=teacher",
            "agents.planner.trainable=false",
            "agents.planner.temperature=0.2",
        ]
    )
    assert config.policies["teacher"].backend == "expert"
    assert config.agents["tool"].policy == "teacher"
    assert config.agents["planner"].trainable is False and config.agents["planner"].temperature == 0.2


YAML_FILES = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_yaml_loads_and_says_how_to_run_it(path: Path):
    assert path.read_text().startswith("#"), f"{path} must start with a comment showing how to run it"
    if path.parent.name == "env":
        config = load_config([f"env.name={path.stem}"])
        assert config.env.name == path.stem
    elif path.parent.name == "policy":
        config = load_config([f"policy={path.stem}"])
        assert config.policy.backend in ("hf", "openai", "expert")
    else:
        load_config([f"config={path}"])


def test_accelerate_configs_are_valid_yaml():
    files = sorted((CONFIG_DIR / "accelerate").glob("*.yaml"))
    assert {p.stem for p in files} >= {"ddp", "fsdp2", "zero3"}
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_key_listing_covers_nested_settings():
    keys = all_keys()
    assert "training.sft_config.lora_r" in keys and "agents.<name>.trainable" in keys


def test_groups_on_the_command_line_win_over_a_preset():
    preset = f"config={CONFIG_DIR / 'quick_test.yaml'}"
    assert load_config([preset]).policy.backend == "expert"
    assert load_config([preset, "policy=hf"]).policy.backend == "hf"
    assert load_config([preset, "env=plan_path"]).env.name == "plan_path"
    assert load_config([preset, "env=plan_path"]).training.sft_num_episodes == 10


def test_a_preset_must_be_a_mapping(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config([f"config={listing}"])


def test_text_settings_keep_the_characters_typed():
    config = load_config(
        [
            "training.run_name=20261121_221453",
            "training.sft_config.output_dir=0123",
            "training.train_data_path=a.jsonl,b.jsonl",
            "agents.tool.policy=null",
        ]
    )
    assert config.training.run_name == "20261121_221453"
    assert config.training.sft_config.output_dir == "0123"
    assert config.agents["tool"].policy is None
    assert load_config(["training.sft_num_episodes=12"]).training.sft_num_episodes == 12


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "training.sft_config.lr_scheduler_type=bogus",
            r"lr_scheduler_type='bogus' is invalid; expected linear, cosine",
        ),
        (
            "training.sft_config.report_to=surely_not_installed_tracker",
            r"needs the surely_not_installed_tracker package",
        ),
    ],
)
def test_training_settings_are_checked_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([override])
