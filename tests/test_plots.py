import json

import pytest
from synthetic_runs import standard_episodes, write_run

from pettingllms.exceptions import DataError
from pettingllms.plots import write_plots
from pettingllms.stats import load_run
from pettingllms.training_log import find_training_dir, read_loss_curves, read_training_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert len(data) > 1024, path
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100, path


EVALUATION = {"success_rate": 0.6, "success_interval_95": [0.45, 0.73], "episodes": 40}


def write_training(folder, records_name, log_history_in_summary=False, evaluated=False):
    """A `train` output folder as the trainer leaves it: the summary, and the log in the newest checkpoint;
    `evaluated`: with the before/after evaluation `pettingllms run` adds."""
    history = [{"loss": 2.0 - 0.1 * step, "step": step} for step in range(1, 9)] + [{"eval_loss": 1.5, "step": 8}]
    summary = {"data_files": [f"somewhere/{records_name}"], "first_train_loss": 1.9, "final_train_loss": 1.2}
    if evaluated:
        summary["evaluation"] = {"before": {**EVALUATION, "success_rate": 0.2}, "after": EVALUATION}
    if log_history_in_summary:
        summary["log_history"] = history[:3]
    folder.mkdir(parents=True)
    (folder / "training_summary.json").write_text(json.dumps(summary))
    for step, entries in ((4, history[:4]), (8, history)):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": entries}))


@pytest.mark.slow
def test_every_plot_is_a_valid_png(tmp_path):
    files = write_run(tmp_path, "toy", standard_episodes())
    write_training(tmp_path / "model", files.records.name, evaluated=True)
    run = load_run(files.rollouts)
    results = read_training_results(files, run.config, tmp_path / "model")
    assert results.before["success_rate"] == 0.2 and results.after == EVALUATION
    written = write_plots(run.summary, tmp_path / "plots", results.curves, results.before, results.after)
    assert set(written) == {
        "success_per_agent", "success_per_turn", "rewards", "lengths", "training_loss", "before_after",
    }  # fmt: skip
    for path in written.values():
        assert_valid_png(path)


@pytest.mark.slow
def test_without_training_or_evaluation_those_plots_are_left_out(tmp_path):
    files = write_run(tmp_path, "toy", standard_episodes())
    run = load_run(files.rollouts)
    results = read_training_results(files, run.config)
    assert results.folder is None and results.before is None and results.after is None
    written = write_plots(run.summary, tmp_path / "plots", results.curves, results.before, results.after)
    assert set(written) == {"success_per_agent", "success_per_turn", "rewards", "lengths"}


def test_an_evaluation_beside_the_run_is_its_after(tmp_path):
    files = write_run(tmp_path, "toy", standard_episodes())
    files.evaluation.write_text(json.dumps(EVALUATION))
    results = read_training_results(files, None)
    assert results.before is None and results.after == EVALUATION


def test_loss_curve_comes_from_the_newest_checkpoint_or_the_summary(tmp_path):
    write_training(tmp_path / "a", "sft_data_toy.jsonl")
    (curve,) = read_loss_curves(tmp_path / "a")
    assert curve.steps == list(range(1, 9)) and curve.losses[0] == 1.9
    assert curve.eval_steps == [8] and curve.eval_losses == [1.5]
    write_training(tmp_path / "b", "sft_data_toy.jsonl", log_history_in_summary=True)
    assert read_loss_curves(tmp_path / "b")[0].steps == [1, 2, 3]


def test_a_per_policy_training_gives_one_curve_per_policy(tmp_path):
    write_training(tmp_path / "model" / "planner", "sft_data_toy.jsonl")
    write_training(tmp_path / "model" / "tool", "sft_data_toy.jsonl")
    assert [curve.label for curve in read_loss_curves(tmp_path / "model")] == ["planner", "tool"]


def test_a_folder_that_is_not_a_training_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_loss_curves(tmp_path / "missing")
    with pytest.raises(DataError, match="no training_summary.json"):
        read_loss_curves(tmp_path)


def test_the_training_of_a_run_is_found_only_when_it_used_the_run(tmp_path):
    files = write_run(tmp_path, "toy", standard_episodes())
    config = {"config": {"training": {"sft_config": {"output_dir": str(tmp_path / "model")}}}}
    write_training(tmp_path / "model", files.records.name)
    assert find_training_dir(files, config) == tmp_path / "model"
    other = write_run(tmp_path, "other", standard_episodes())
    assert find_training_dir(other, config) is None
