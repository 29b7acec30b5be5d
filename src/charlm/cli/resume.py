"""`resume=RUN_DIR`: continue a run with the overrides it was started with.

`python scripts/train.py resume=outputs/runs/X` is shorthand for repeating run X's command
line (read from X/.hydra/overrides.yaml) plus `hydra.run.dir=X ckpt_path=last`. Overrides
given beside `resume=` are applied after the run's own, so they win. The directory is taken
verbatim: a sweep job's directory (`model=lstm,trainer.max_steps=600`) or a path with spaces,
quotes or `=` works as the shell gives it.
"""

from __future__ import annotations

from pathlib import Path

from charlm.errors import CharLMError

RESUME_KEY = "resume="


def expand_resume(argv: list[str]) -> list[str]:
    """argv with `resume=DIR` replaced, in place, by that run's overrides, its run dir and `ckpt_path=last`."""
    found = [i for i, a in enumerate(argv) if i > 0 and a.startswith(RESUME_KEY)]
    if not found:
        return argv
    run_dir = Path(argv[found[-1]][len(RESUME_KEY) :]).expanduser()
    original = [o for o in saved_overrides(run_dir) if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        raise CharLMError(
            f"resume={run_dir} holds no checkpoint to resume from (its checkpoints/ folder has no "
            ".ckpt file): the run stopped before its first checkpoint; start it again instead"
        )
    from charlm.overrides import quote_override

    expanded = [*original, quote_override("hydra.run.dir", str(run_dir)), "ckpt_path=last"]
    rest = [a for i, a in enumerate(argv) if i not in found]
    at = found[0] - sum(1 for i in found if i < found[0])
    return [*rest[:at], *expanded, *rest[at:]]


def saved_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was started with, as Hydra recorded them."""
    import yaml

    saved = run_dir / ".hydra" / "overrides.yaml"
    if not run_dir.is_dir():
        raise CharLMError(f"resume={run_dir} does not exist; give a run directory or a sweep job's directory")
    if not saved.is_file():
        raise CharLMError(f"resume={run_dir} is not a run directory (no .hydra/overrides.yaml in it)")
    overrides = yaml.safe_load(saved.read_text()) or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise CharLMError(f"resume={run_dir}: {saved} is not a list of overrides")
    return overrides
