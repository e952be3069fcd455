"""May pettingllms write here? The one rule for the folders `train` and `merge-lora` write.

A folder is *ours* when it holds `pettingllms_output.json`, which train and merge-lora write
into it before anything else, or `training_summary.json`, which every earlier `train` wrote.
Only our folders are ever replaced, and only when the user asks; any other non-empty folder
is refused, overwrite or not: `output_dir=.` in a clone would rewrite the project's
README.md, and a typo must not cost a home directory.

    >>> output = claim_output("sft_model", kind="train", overwrite=False, overwrite_flag="overwrite=true")
    >>> with output.writing():      # a full disk, a read-only folder: one UserError line
    ...     trainer.save_model("sft_model")

Claiming writes the marker, so a folder that cannot be written is reported before a model
is loaded; a write that fails later removes what it left half-written, when the folder held
nothing of value before.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pettingllms.exceptions import UserError
from pettingllms.models import first_line

MARKER = "pettingllms_output.json"
SUMMARY_FILE = "training_summary.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")
# Errors that say "this folder cannot take the files", not "pettingllms has a bug".
_STORAGE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EFBIG,
}


@dataclass(frozen=True)
class Output:
    """A claimed output folder. `fresh`: it held nothing of value, so a failed write may empty it."""

    folder: Path
    fresh: bool
    existed: bool

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turn a failed write into one UserError line naming the folder; undo it when fresh."""
        try:
            yield
        except Exception as error:
            if not is_storage_error(error):
                raise
            if self.fresh:
                self.discard()
            raise UserError(f"Could not write to output folder '{self.folder}': {first_line(error)}") from None

    @contextmanager
    def discarded_on_failure(self) -> Iterator[None]:
        """Undo the claim of a fresh folder when what runs inside fails (a model that does not load)."""
        try:
            yield
        except BaseException:
            if self.fresh:
                self.discard()
            raise

    def discard(self) -> None:
        """Remove what was written: the folder, or its contents when it was there before."""
        if self.existed:
            _empty(self.folder)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def claim_output(
    folder: str | Path,
    *,
    kind: str,
    overwrite: bool,
    overwrite_flag: str,
    resume: bool = False,
    resume_flag: str | None = None,
    protected: tuple[Path, ...] = (),
) -> Output:
    """Make `folder` ready for a `kind` ("train", "merge") output, or raise a one-line UserError.

    New or empty: used. Ours: continued when `resume`, emptied when `overwrite` (or when it
    holds nothing but the marker: a run stopped before it wrote anything), else refused with
    the flags that would allow it. Anything else that is not empty: refused.
    """
    folder = Path(folder)
    _refuse_protected(folder, protected)
    existed = folder.exists() or folder.is_symlink()
    if existed and not folder.is_dir():
        raise UserError(f"Output folder '{folder}' is a file; choose a folder.")
    contents = sorted(folder.iterdir()) if existed else []
    if contents:
        if not is_ours(folder):
            raise UserError(
                f"Output folder '{folder}' is not empty and holds no pettingllms output (no {MARKER}); "
                f"choose an empty or new folder: {overwrite_flag} only replaces pettingllms outputs."
            )
        if not resume and not (overwrite or [path.name for path in contents] == [MARKER]):
            raise UserError(_refusal(folder, overwrite_flag, resume_flag))
        if not resume:
            _empty(folder)
    output = Output(folder, fresh=not (resume and contents), existed=existed)
    _write_marker(output, kind)
    return output


def is_ours(folder: Path) -> bool:
    """Whether `folder` holds a pettingllms output (train or merge-lora wrote it)."""
    return (folder / MARKER).is_file() or (folder / SUMMARY_FILE).is_file()


def last_checkpoint(folder: Path) -> Path | None:
    """The `checkpoint-N` folder with the highest N in `folder`, if any."""
    steps = {int(match[1]): path for path in folder.glob("checkpoint-*") if (match := _CHECKPOINT.match(path.name))}
    return steps[max(steps)] if steps else None


def is_storage_error(error: BaseException) -> bool:
    """Whether `error` says the disk or the folder refused a write (full, read-only, not a folder)."""
    if isinstance(error, OSError):
        return error.errno in _STORAGE_ERRNOS
    # Rust libraries (safetensors, tokenizers) raise their own types, with the errno in the text.
    code = _RUST_IO_ERROR.search(str(error))
    if code is not None:
        return int(code[1] or code[2]) in _STORAGE_ERRNOS
    # torch.save's zip writer reports a failed write as a RuntimeError without the errno.
    return isinstance(error, RuntimeError) and "write failed" in str(error)


def _refusal(folder: Path, overwrite_flag: str, resume_flag: str | None) -> str:
    checkpoint = last_checkpoint(folder)
    if resume_flag and not (folder / SUMMARY_FILE).is_file():
        at = f" (last checkpoint: {checkpoint.name})" if checkpoint else ""
        return (
            f"Output folder '{folder}' holds an unfinished training{at}; pass {resume_flag} to continue "
            f"it, or {overwrite_flag} to start over."
        )
    further = f", {resume_flag} to train it further" if resume_flag and checkpoint else ""
    return (
        f"Output folder '{folder}' holds an earlier pettingllms output; pass {overwrite_flag} to replace "
        f"it{further}, or choose another folder."
    )


def _refuse_protected(folder: Path, protected: tuple[Path, ...]) -> None:
    for path in protected:
        if path.exists() and path.resolve().is_relative_to(folder.resolve()):
            raise UserError(
                f"Output folder '{folder}' holds '{path}', an input of this command; choose another folder."
            )


def _write_marker(output: Output, kind: str) -> None:
    from pettingllms import __version__

    content = {"written_by": f"pettingllms {kind}", "version": __version__}
    try:
        output.folder.mkdir(parents=True, exist_ok=True)
        (output.folder / MARKER).write_text(json.dumps(content, indent=2) + "\n")
    except OSError as error:
        if output.fresh and not output.existed:
            shutil.rmtree(output.folder, ignore_errors=True)
        raise UserError(f"Cannot write to output folder '{output.folder}': {first_line(error)}") from None


def _empty(folder: Path) -> None:
    # The folder itself stays: it may be a mount point or a link the user made.
    for path in folder.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
