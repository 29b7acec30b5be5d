"""`resume=RUN_DIR`: continue a run with the overrides it was started with.

`python scripts/train.py resume=outputs/runs/X` is shorthand for repeating run X's command
line (read from X/.hydra/overrides.yaml) plus `hydra.run.dir=X ckpt_path=last`. Overrides
given beside `resume=` are applied after the run's own, so they win.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from charlm.errors import CharLMError

RESUME_KEY = "resume="


def expand_resume(argv: list[str]) -> list[str]:
    """argv with `resume=DIR` replaced by that run's overrides, its run dir and `ckpt_path=last`."""
    found = [a for a in argv[1:] if a.startswith(RESUME_KEY)]
    if not found:
        return argv
    run_dir = Path(found[-1][len(RESUME_KEY):]).expanduser()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise CharLMError(f"resume={run_dir} is not a run directory (no {saved.relative_to(run_dir)} in it)")
    original = [o for o in OmegaConf.to_container(OmegaConf.load(saved))
                if not o.startswith(("hydra.run.dir=", "ckpt_path="))]
    rest = [a for a in argv[1:] if not a.startswith(RESUME_KEY)]
    return [argv[0], *original, *rest, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
