"""May pettingllms write here? (pettingllms/training/outputs.py), without a model: the folder
rule that train and merge-lora share, and which errors count as "the disk refused"."""

from __future__ import annotations

import errno
import json

import pytest

from pettingllms.exceptions import UserError
from pettingllms.training.outputs import MARKER, Output, claim_output, is_ours, is_storage_error

FLAGS = dict(overwrite_flag="overwrite=true", resume_flag="resume=last")


def claim(folder, **options):
    return claim_output(folder, kind="train", **(dict(overwrite=False) | FLAGS | options))


def test_a_new_or_empty_folder_is_claimed_with_the_marker(tmp_path):
    new = claim(tmp_path / "a" / "b")
    assert new.fresh and not new.existed and is_ours(tmp_path / "a" / "b")
    assert json.loads((tmp_path / "a" / "b" / MARKER).read_text())["written_by"] == "pettingllms train"
    (tmp_path / "empty").mkdir()
    assert claim(tmp_path / "empty").existed


def test_a_folder_of_someone_else_is_never_claimed(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="holds no pettingllms output .*overwrite=true only replaces"):
            claim(tmp_path, overwrite=overwrite)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_our_finished_output_needs_overwrite(tmp_path):
    claim(tmp_path)
    (tmp_path / "training_summary.json").write_text("{}")
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(
        UserError, match=r"earlier pettingllms output; pass overwrite=true to replace it, resume=last to"
    ):
        claim(tmp_path)
    claim(tmp_path, overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [MARKER]


def test_our_unfinished_output_names_its_last_checkpoint_and_is_kept_on_resume(tmp_path):
    claim(tmp_path)
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    with pytest.raises(UserError, match=r"unfinished training \(last checkpoint: checkpoint-10\); pass resume=last"):
        claim(tmp_path)
    resumed = claim(tmp_path, resume=True)
    assert not resumed.fresh and (tmp_path / "checkpoint-2").is_dir()


def test_a_run_stopped_before_it_wrote_anything_is_simply_reused(tmp_path):
    claim(tmp_path)
    assert claim(tmp_path).fresh


def test_an_input_inside_the_folder_is_refused(tmp_path):
    (tmp_path / "data.jsonl").write_text("")
    with pytest.raises(UserError, match=f"^Output folder '{tmp_path}' holds '{tmp_path / 'data.jsonl'}', an input"):
        claim(tmp_path, protected=(tmp_path / "data.jsonl",))


def test_a_failed_write_in_a_fresh_folder_removes_it_and_says_one_line(tmp_path):
    output = claim(tmp_path / "out")
    with pytest.raises(UserError, match=f"^Could not write to output folder '{tmp_path / 'out'}': No space left"):
        with output.writing():
            (tmp_path / "out" / "half.safetensors").write_text("half")
            raise Exception("No space left on device (os error 28)")  # as the tokenizers library says it
    assert not (tmp_path / "out").exists()


def test_a_failed_write_keeps_a_resumed_folder_and_other_errors_pass_through(tmp_path):
    claim(tmp_path)
    (tmp_path / "checkpoint-1").mkdir()
    output = claim(tmp_path, resume=True)
    with pytest.raises(UserError):
        with output.writing():
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (tmp_path / "checkpoint-1").is_dir()
    with pytest.raises(ValueError):  # a bug is not a full disk: it keeps its traceback
        with Output(tmp_path, fresh=True, existed=True).writing():
            raise ValueError("bug")
    assert (tmp_path / "checkpoint-1").is_dir()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EROFS, "Read-only file system"), True),
        (FileExistsError(errno.EEXIST, "File exists"), True),
        (Exception("No space left on device (os error 28)"), True),  # tokenizers
        (Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })'), True),
        (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed"), True),
        (OSError(errno.ECONNRESET, "Connection reset"), False),
        (RuntimeError("CUDA out of memory"), False),
        (ValueError("bad value"), False),
    ],
)
def test_which_errors_mean_the_disk_refused(error, expected):
    assert is_storage_error(error) is expected
