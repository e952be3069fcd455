"""The `pettingllms` command: one short function per command.

Heavy libraries (torch, transformers, trl) are imported inside the commands that need
them, so `pettingllms envs` and `--help` answer at once. A `UserError` prints one line and
exits with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pettingllms.console import info, is_main_process, print_table, quiet_libraries
from pettingllms.exceptions import UserError

OVERRIDES_HELP = (
    "key=value overrides, e.g. env.name=sokoban policy=expert training.sft_num_episodes=50; "
    "`pettingllms keys` lists every key"
)


def load_command_config(args: argparse.Namespace, presets: tuple[str, ...] = ()):
    """The config of a command: `presets`, then the Hydra-style `--config-path/--config-name` preset,
    then the `key=value` overrides."""
    from pettingllms.config import load_config, resolve_preset

    if args.config_path and not args.config_name:
        raise UserError("--config-path needs --config-name NAME (a NAME.yaml in that folder).")
    chosen = [f"config={resolve_preset(args.config_path, args.config_name)}"] if args.config_name else []
    return load_config([*presets, *chosen, *args.overrides])


def cmd_collect(args: argparse.Namespace) -> int:
    config = load_command_config(args)
    result = _collect(config)
    return exit_status(result)


def cmd_train(args: argparse.Namespace) -> int:
    config = load_command_config(args)
    paths = train_data_paths(config)
    settings = config.training.sft_config
    if settings.model_name_or_path is None:
        from pettingllms.models import collecting_model

        settings.model_name_or_path = collecting_model(paths)
    _train(config, paths)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_command_config(args)
    result = _collect(config)
    if result.interrupted:
        return exit_status(result)
    if not config.training.run_sft_training:
        print("training.run_sft_training=false: collected only.")
        return 0
    policy_models = trained_policies(config)
    summary = _train(config, [glob.escape(str(result.files.records))], policy_models)
    if wants_eval_after(config, per_policy=bool(policy_models)):
        before_and_after(config, summary, result.files.run_name)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pettingllms.evaluation import evaluate

    config = load_command_config(args)
    result = evaluate(config)
    print_evaluation(result.summary)
    print(f"  summary  {result.files.evaluation}\n  episodes {result.files.rollouts}")
    if result.interrupted:
        print(f"Interrupted. Resume with the same command plus eval.run_name={result.files.run_name}", file=sys.stderr)
    return exit_status(result)


def cmd_iterate(args: argparse.Namespace) -> int:
    from pettingllms.iterate import SUMMARY_FILE, Iteration

    # `rounds=K` is the short spelling of iterate.rounds=K.
    args.overrides = [f"iterate.{item}" if item.startswith("rounds=") else item for item in args.overrides]
    config = load_command_config(args)
    iteration = Iteration(config)
    summary = iteration.run()
    print_iteration(summary)
    print(f"  summary  {iteration.root / SUMMARY_FILE}")
    return 0


def print_iteration(summary: dict[str, Any]) -> None:
    def rate(numbers, interval):
        low, high = interval
        return f"{numbers:.2f} [{low:.2f}, {high:.2f}]"

    base = summary["base_eval"]
    rows = [("round", "collected (success)", "kept", "final loss", "test success (95% interval)")]
    rows.append(("base", "", "", "", rate(base["success_rate"], base["success_interval_95"])))
    for row in summary["rounds"]:
        loss = row["final_train_loss"]
        rows.append(
            (
                str(row["round"]),
                f"{row['collected_episodes']} ({row['collect_success_rate']:.2f})",
                str(row["kept_records"]),
                f"{loss:.4f}" if isinstance(loss, float) else "-",
                rate(row["eval_success_rate"], row["eval_interval_95"]),
            )
        )
    print(f"\niteration on {summary['env_name']}")
    print_table(rows)


def wants_eval_after(config, per_policy: bool) -> bool:
    """`training.eval_after`, or by default: yes when the env has a test split."""
    wanted = config.training.eval_after
    if per_policy:
        if wanted:
            info("training.eval_after: not available with one adapter per policy yet; skipped.")
        return False
    if wanted is None:
        from pettingllms.collect.episode import make_env

        return make_env(config).has_test_split
    return wanted


def before_and_after(config, summary: dict[str, Any], run_name: str) -> None:
    """Evaluate the starting model and the trained one on the same test tasks; print and save both."""
    from pettingllms.evaluation import evaluate, trained_agents, with_model
    from pettingllms.runfiles import write_json_atomic

    agents = trained_agents(config)
    base = config.training.sft_config.model_name_or_path
    results = {}
    for label, model in (("before", base), ("after", summary["output_dir"])):
        info(f"Evaluating the {label} model ({model}) on the test split: {config.eval.num_episodes} episodes...")
        results[label] = evaluate(with_model(config, model, agents, f"{run_name}_{label}")).summary
    print_before_after(results["before"], results["after"])
    summary["evaluation"] = results
    from pathlib import Path

    from pettingllms.training.sft import SUMMARY_FILE

    write_json_atomic(Path(summary["output_dir"]) / SUMMARY_FILE, summary)


def print_evaluation(summary: dict[str, Any]) -> None:
    low, high = summary["success_interval_95"]
    rows = [
        ("env", f"{summary['env_name']} ({summary['split']} split)"),
        ("episodes", f"{summary['episodes']} ({summary['error_episodes']} errors)"),
        ("success rate", f"{summary['success_rate']:.2f}  (95% interval {low:.2f}-{high:.2f})"),
        ("turns per episode", f"{summary['turns_per_episode']:.2f}"),
    ]
    for agent, numbers in summary["per_agent"].items():
        rows.append((f"  {agent}", f"invalid actions {numbers['invalid_action_rate']:.2f}"))
    for k, value in (summary.get("pass_at_k") or {}).items():
        rows.append((f"pass@{k}", f"{value:.3f}"))
    print("\nevaluation")
    print_table([("", "")] + rows)


def print_before_after(before: dict[str, Any], after: dict[str, Any]) -> None:
    def rate(summary):
        low, high = summary["success_interval_95"]
        return f"{summary['success_rate']:.2f} [{low:.2f}, {high:.2f}]"

    rows = [("", "before", "after"), ("success (95% interval)", rate(before), rate(after))]
    for agent in after["per_agent"]:
        rows.append(
            (
                f"{agent}: invalid actions",
                f"{before['per_agent'].get(agent, {}).get('invalid_action_rate', 0):.2f}",
                f"{after['per_agent'][agent]['invalid_action_rate']:.2f}",
            )
        )
    rows.append(("turns per episode", f"{before['turns_per_episode']:.2f}", f"{after['turns_per_episode']:.2f}"))
    print(f"\nbefore / after training, {after['episodes']} test episodes")
    print_table(rows)


def trained_policies(config) -> dict[str, str | None]:
    """{policy name: its model} for the policies that play trainable agents, when more than one
    does (role-specialized agents): `run` then trains one adapter per policy, on its own model."""
    from pettingllms.envs import env_class

    named = config.policies_by_name()
    cls = env_class(config.env.name)
    trainable = [agent for agent in cls.possible_agents if config.trains(agent, cls.non_trainable_agents)]
    used = {config.policy_of(agent) for agent in trainable}
    if len(used) < 2:
        return {}
    # A policy with no model of its own (an expert, a hosted API) trains the shared default model.
    return {name: named[name].model_path if named[name].backend in ("hf", "openai") else None for name in used}


def cmd_quick_test(args: argparse.Namespace) -> int:
    from pettingllms.config import CONFIG_DIR

    config = load_command_config(args, presets=(f"config={CONFIG_DIR / 'quick_test.yaml'}",))
    result = _collect(config)
    if result.interrupted:
        return exit_status(result)
    summary = _train(config, [glob.escape(str(result.files.records))])
    print_summary_table(result.stats, summary, result.files)
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from pettingllms import envs

    rows = [("name", "gymnasium id", "agents", "task source", "expert", "max_turns", "note")]
    for row in envs.describe_registry():
        expert = "" if row["expert"] is None else "yes" if row["expert"] else "no"
        max_turns = "" if row["max_turns"] is None else str(row["max_turns"])
        agents = ", ".join(row["agents"])
        rows.append((row["name"], row["gym_id"], agents, row["task_source"], expert, max_turns, row["note"]))
    print_table(rows)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from pettingllms.config import describe_keys

    rows = [row for row in describe_keys() if row[0].startswith(args.prefix)]
    if not rows:
        raise UserError(f"No config key starts with '{args.prefix}'; try `pettingllms keys` for all of them.")
    for key, default, text in rows:
        print(f"{key} = {default!r}\n    {text}")
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    from pettingllms.training.merge import merge_lora

    path = merge_lora(args.base_model_name, args.lora_model_path, args.output_path, overwrite=args.overwrite)
    print(f"Merged model written to {path}")
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from pettingllms.tiny_model import build_tiny_model

    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise UserError(f"--output {args.output} is a file; give a folder to write the model into.")
    try:
        path = build_tiny_model(args.output)
    except OSError as error:
        raise UserError(f"Cannot write the tiny model to {args.output}: {error.strerror or error}.") from None
    print(f"Tiny model written to {path}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pettingllms.stats import print_stats

    print_stats(args.runs, data_dir=args.data_dir, as_json=args.json, plot=args.plot)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pettingllms.report import write_report

    path = write_report(args.run, data_dir=args.data_dir, output=args.output, training_dir=args.training)
    print(f"Report written to {path}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from pettingllms.curation import describe_result, filter_run
    from pettingllms.dataset_card import write_card

    result = filter_run(args.run, args.overrides, args.output, data_dir=args.data_dir, rejudge=args.rejudge)
    print("\n".join(describe_result(result)))
    write_card(result.files.directory)
    return 0


def judge_line(judge: dict) -> str:
    """One line on the judge's work: calls, scores and errors by kind (a judge that never gives a score shows here)."""
    errors = ", ".join(f"{count} {kind}" for kind, count in judge["errors"].items()) or "none"
    mean = "n/a" if judge["mean_score"] is None else f"{judge['mean_score']:.2f}"
    return f"Judge: {judge['calls']} calls, {judge['scored']} scores (mean {mean}), errors: {errors}."


def _collect(config):
    from pettingllms.collect import collect

    result = collect(config)
    stats = result.stats
    print(
        f"{stats['total_episodes']} episodes, {stats['successful_episodes']} successful "
        f"(success rate {stats['success_rate']:.2f}), {stats['kept_records']} records kept, "
        f"{stats['error_episodes']} errors."
    )
    if stats.get("judge"):
        print(judge_line(stats["judge"]))
    if stats["total_episodes"] and stats["successful_episodes"] == 0 and config.training.only_success:
        models = any(policy.backend != "expert" for policy in config.policies_by_name().values())
        hint = "; a tiny or untrained model is expected to score zero" if models else ""
        print(f"No episode succeeded, so nothing is kept (training.only_success=true){hint}.")
    if result.retried:
        print(f"{result.retried} episodes that had ended in an infrastructure error were played again.")
    for label, path in (
        ("records", result.files.records),
        ("stats", result.files.stats),
        ("rollouts", result.files.rollouts),
        ("card", result.card),
    ):
        if path is not None:
            print(f"  {label:9s}{path}")
    if result.interrupted:
        # The run is over and its files are whole; more Ctrl-C presses must not turn the exit into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(
            f"Interrupted. Finished episodes are saved; resume with the same command plus "
            f"training.run_name={result.files.run_name}",
            file=sys.stderr,
        )
    return result


def exit_status(result) -> int:
    """0, or 128 + the signal that stopped the run (130 for Ctrl-C, 143 for SIGTERM), as shells expect."""
    return 128 + result.stopped_by if result.interrupted else 0


def _train(config, paths: list[str], policy_models: dict[str, str] | None = None) -> dict[str, Any]:
    from pettingllms.models import model_for_training
    from pettingllms.training.progress import training_summary_rows
    from pettingllms.training.sft import run_training

    settings = config.training.sft_config
    if policy_models and not settings.per_policy:
        info("Role-specialized agents: training one adapter per policy (training.sft_config.per_policy=true).")
        settings.per_policy = True
    if settings.model_name_or_path is None:
        settings.model_name_or_path = model_for_training(config)
        if config.policy.backend == "openai" and not config.policy.model_path:
            print(
                f"warning: training {settings.model_name_or_path}, not the served model: set "
                "training.sft_config.model_name_or_path (or policy.model_path) to the model's folder.",
                file=sys.stderr,
            )
    models = {name: model for name, model in (policy_models or {}).items() if model}
    summary = run_training(settings, paths, models)
    if is_main_process():  # under torchrun / accelerate launch, one table, not one per process
        print_table(training_summary_rows(summary), title="training")
    return summary


def train_data_paths(config) -> list[str]:
    """`training.train_data_path` (files or globs: a list, or a string with commas), else the
    records of run `training.run_name`, else the newest collected file. A path made from a run
    name is escaped: a run name is a name, never a pattern."""
    from pettingllms.runfiles import newest_records, run_records, run_records_with_shards

    wanted = config.training.train_data_path
    if wanted:
        items = wanted.split(",") if isinstance(wanted, str) else wanted
        return [str(item).strip() for item in items if str(item).strip()]
    if config.training.run_name:
        found = run_records_with_shards(config.training.sft_data_dir, config.training.run_name)
        # None yet: the run's own file, so that the error names the file that was expected.
        found = found or [run_records(config.training.sft_data_dir, config.training.run_name)]
        return [glob.escape(str(path)) for path in found]
    return [glob.escape(str(newest_records(config.training.sft_data_dir)))]


def print_summary_table(stats: dict[str, Any], summary: dict[str, Any], files) -> None:
    first, last = summary.get("first_train_loss"), summary.get("final_train_loss")
    loss = f"{first:.4f} -> {last:.4f}" if first is not None and last is not None else str(last)
    rows = [
        ("episodes", str(stats["total_episodes"])),
        (
            "success rate",
            f"{stats['success_rate']:.2f} ({stats['successful_episodes']} ok, {stats['failed_episodes']} failed)",
        ),
        ("records kept", f"{stats['kept_records']} of {stats['total_records']} turns"),
        ("train loss", loss),
        ("data", str(files.records)),
        ("stats", str(files.stats)),
        ("model", str(summary.get("output_dir"))),
    ]
    print("\nquick-test summary")
    print_table([("", "")] + rows)


def output_options() -> argparse.ArgumentParser:
    """-v / -q, accepted before or after the command."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="also show libraries' own warnings and progress bars")  # fmt: skip
    options.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="print only the summaries (and errors)")  # fmt: skip
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pettingllms", description=__doc__.splitlines()[0], parents=[output_options()]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    original_add_parser = commands.add_parser

    def add_parser(name, **kwargs):  # every command takes -v / -q as well
        return original_add_parser(name, parents=[output_options()], **kwargs)

    commands.add_parser = add_parser
    for name, handler, text in (
        ("collect", cmd_collect, "collect-only: run episodes, keep the successful ones, write JSONL + stats"),
        ("train", cmd_train, "train-only: fine-tune on existing JSONL/Parquet files"),
        ("run", cmd_run, "collect, then train on what was just collected"),
        ("quick-test", cmd_quick_test, "the whole flow, small, on the tiny built-in model (CPU, offline)"),
        ("eval", cmd_eval, "play a policy on the env's test split and report its success rate with an interval"),
        (
            "iterate",
            cmd_iterate,
            "rounds of collect -> train -> evaluate (rounds=K), each round's model collecting next",
        ),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
        sub.add_argument("--config-path", metavar="DIR", help="folder of preset YAML files (as Hydra's flag)")
        sub.add_argument(
            "--config-name", metavar="NAME", help="preset NAME.yaml from --config-path (default: configs/)"
        )
        sub.set_defaults(handler=handler)
    commands.add_parser("envs", help="list registered environments").set_defaults(handler=cmd_envs)
    keys = commands.add_parser("keys", help="list every config key with its default and help")
    keys.add_argument(
        "prefix", nargs="?", default="", help="only keys that start with this, e.g. policy or training.sft"
    )
    keys.set_defaults(handler=cmd_keys)
    merge = commands.add_parser("merge-lora", help="merge a LoRA adapter into its base model")
    merge.add_argument("--base_model_name", required=True, help="base model folder or cached Hub id")
    merge.add_argument("--lora_model_path", required=True, help="adapter folder (from `pettingllms train`)")
    merge.add_argument("--output_path", required=True, help="where the standalone model goes")
    merge.add_argument(
        "--overwrite", action="store_true", help="replace an earlier pettingllms output folder (never another folder)"
    )
    merge.set_defaults(handler=cmd_merge_lora)
    tiny = commands.add_parser("make-tiny-model", help="write the tiny built-in model + tokenizer to a folder")
    tiny.add_argument("--output", required=True, help="folder to write")
    tiny.set_defaults(handler=cmd_make_tiny_model)
    run_help = "a run name (looked up in --data-dir), a rollouts or records file, or a folder (its newest run)"
    data_dir_help = "where run names are looked up (default: ./sft_data, as training.sft_data_dir)"
    stats = commands.add_parser("stats", help="tables of collected runs: agents, turns, tasks, rewards, lengths")
    stats.add_argument("runs", nargs="+", metavar="RUN", help=run_help + "; several runs go side by side")
    stats.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    stats.add_argument("--json", action="store_true", help="print each run's stats-file JSON instead of tables")
    stats.add_argument("--plot", action="store_true", help="also write PNGs into runs/plots_<run>/ beside each run")
    stats.set_defaults(handler=cmd_stats)
    report = commands.add_parser("report", help="write one self-contained HTML page about a run")
    report.add_argument("run", metavar="RUN", help=run_help)
    report.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    report.add_argument("--output", metavar="FILE", help="where the page goes (default: runs/report_<run>.html)")
    report.add_argument("--training", metavar="DIR", help="the run's training folder (default: found from its config)")
    report.set_defaults(handler=cmd_report)
    from pettingllms.curation import FILTER_HELP

    curate = commands.add_parser(
        "filter", help="new records from a run's rollouts with other filters (dedup, quality), no model call"
    )
    curate.add_argument("run", metavar="RUN", help=run_help)
    curate.add_argument("overrides", nargs="*", metavar="key=value", help=FILTER_HELP)
    curate.add_argument("--output", required=True, metavar="NAME", help="name of the new records, beside RUN's files")
    curate.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    curate.add_argument(
        "--rejudge", action="store_true", help="score the episodes again with the run's judge or reward.judge.*"
    )
    curate.set_defaults(handler=cmd_filter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow `--config-name NAME` too; argparse leaves those over as unknown arguments.
    args, extra = parser.parse_known_args(argv)
    unexpected = [item for item in extra if item.startswith("-") or "=" not in item]
    if unexpected or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unexpected or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    # In the environment, so that processes started from here (torchrun ranks) behave the same.
    if getattr(args, "verbose", False):
        os.environ["PETTINGLLMS_VERBOSE"] = "1"
    if getattr(args, "quiet", False):
        os.environ["PETTINGLLMS_QUIET"] = "1"
    quiet_libraries()
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
