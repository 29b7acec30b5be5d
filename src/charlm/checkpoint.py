"""Writing checkpoints atomically and reading them safely.

Writing: every checkpoint goes to a temporary file in the same folder, is flushed to disk
and then renamed over the target, so a kill mid-write leaves the previous file intact.

Reading: `torch.load(weights_only=True)` only, so a crafted file cannot run code; the model
class a checkpoint names must be one of charlm's own (registered in `charlm.models.ARCHITECTURES`).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from charlm.errors import CharLMError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, or a one-line `CharLMError` saying why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CharLMError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharLMError(f"{path} was refused: it holds objects that are unsafe to load ({first[:200]})") from None
    except Exception as err:  # torch raises many types for files that are not (whole) checkpoints
        raise CharLMError(f"{path} is truncated or not a checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CharLMError(f"{path} is not a charlm checkpoint (no model weights and settings in it)")
    return ckpt


def is_resumable(path: Path) -> bool:
    try:
        return "optimizer_states" in load_checkpoint(path)
    except CharLMError:
        return False


def find_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """A checkpoint file from a file path or a run directory (its `best` or `last` checkpoint)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CharLMError(f"ckpt_path={str(path)!r} does not exist; give a .ckpt file or a run directory")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if which not in ("best", "last"):
        raise CharLMError(f"which={which!r} is not valid; choose best or last")
    candidates = sorted(folder.glob("best*.ckpt"), key=os.path.getmtime) if which == "best" else []
    last = folder / "last.ckpt"
    if candidates:
        return candidates[-1]
    if last.is_file():
        return last
    raise CharLMError(f"no checkpoint in {folder} (expected last.ckpt or best-*.ckpt)")


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest loadable full checkpoint of a run (weights-only ones cannot resume: no optimiser state),
    passing over damaged ones; None if it has none."""
    folder = run_dir / "checkpoints"
    files = sorted(folder.glob("*.ckpt"), key=os.path.getmtime, reverse=True) if folder.is_dir() else []
    last = folder / "last.ckpt"
    if last in files:  # prefer last.ckpt: it is the most recent by construction
        files.remove(last)
        files.insert(0, last)
    for f in files:
        if is_resumable(f):
            return f
    if files:
        raise CharLMError(f"every checkpoint in {folder} is damaged (newest: {files[0].name}); cannot resume")
    return None


def save_last_checkpoint(trainer: Any) -> Path | None:
    """Write `last.ckpt` now, where the run's checkpoint callback with `save_last` keeps it.

    For the step a run stops at (its last, a time budget, Ctrl-C): the callback itself saves only
    every `every_n_train_steps`, so `last.ckpt` would otherwise lag behind the step reached. A
    `fast_dev_run` writes none, as Lightning's own checkpointing does not.
    """
    if trainer.fast_dev_run:
        return None
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "save_last", False) and callback.dirpath:
            path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            trainer.save_checkpoint(path, weights_only=False)
            callback.last_model_path = str(path)  # the callback's own record, so it never versions the name
            callback._last_global_step_saved = trainer.global_step  # and does not write it again at train end
            callback._last_checkpoint_saved = str(path)
            return path
    return None


def share_final_checkpoint(best: str | Path, last: str | Path) -> bool:
    """Make `last` a hard link to `best` when both hold the run's final step, so a run whose best is its
    last step (any short run; most runs whose val/loss still falls) stores one file, not two equal ones.

    Both are full checkpoints of that step; best was written after its validation, so resuming from it
    goes on exactly where last would. Later writes of last.ckpt replace the link, never best's bytes.
    """
    best, last = Path(best), Path(last)
    if not (best.is_file() and last.is_file()) or os.path.samefile(best, last):
        return False
    tmp = last.with_name(f".{last.name}.link")
    try:
        os.link(best, tmp)
    except OSError:  # a filesystem without hard links keeps two files
        return False
    os.replace(tmp, last)
    return True
