"""Names of run directories, as `${charlm.run_name:...}` and `${charlm.job_dir:...}` in conf/hydra/: a single
run is named by when it started and its overrides, a sweep job by its overrides, flat (path values shortened
to their file name), so TensorBoard and `ls outputs/` show what each run is.

Importing this module registers both resolvers; `charlm.config` imports it, so any composed training config
resolves its directory names.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from omegaconf import ListConfig, OmegaConf

PATH_VALUE = re.compile(r"[/\\]")  # a value with a slash names a file: only its last part goes into a dir name
HYDRA_ESCAPE = re.compile(r"\\(.)")  # a sweep job's overrides come escaped: 00\:00\:02\:00, my\ books
MAX_DIRNAME_BYTES = 200  # file systems refuse names over 255 bytes; a long override list is cut and hashed


def job_dirname(overrides: list[str], exclude: list[str]) -> str:
    """A sweep job's directory name: its overrides, sorted, flat (path values shortened to their file name).

    Used as `${charlm.job_dir:...}` in conf/hydra/default.yaml instead of Hydra's override_dirname,
    which keeps the slashes of `data.path=/a/b.txt` and so nests the job in a tree of folders.
    """
    items = []
    for override in sorted(overrides):
        key, sep, value = override.partition("=")
        if key.lstrip("+~") in exclude:
            continue
        value = HYDRA_ESCAPE.sub(r"\1", value.strip("'\""))
        if PATH_VALUE.search(value):
            value = PATH_VALUE.split(value.rstrip("/\\"))[-1] or "root"
        items.append(f"{key}{sep}{value}")
    name = ",".join(items) or "default"
    if len(name.encode()) <= MAX_DIRNAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]  # still one directory per job when cut
    return name.encode()[: MAX_DIRNAME_BYTES - 11].decode(errors="ignore") + "~" + digest


OmegaConf.register_new_resolver(
    "charlm.job_dir", lambda overrides, exclude: job_dirname(list(overrides), list(exclude)), replace=True
)


def run_name(stamp: str, overrides: list[str], exclude: list[str]) -> str:
    """A single run's directory name: the time it started and its overrides as a sweep job's directory is
    named (`2026-12-04_03-10-00_model=gru,trainer.max_steps=5`), or the time alone without overrides."""
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in exclude]
    name = f"{stamp}_{job_dirname(kept, exclude)}" if kept else stamp
    return name.replace("${", "{")  # Hydra reads its output dir inside other interpolations (the log file's)


def as_typed(overrides: Any) -> list[str]:
    """The overrides of `${hydra.overrides.task}`, an interpolation in one resolved where it can be (the name
    is then the same when Lightning's DDP ranks resolve it again) and kept as typed where it cannot (the job
    then reports it, as without this name)."""
    if not isinstance(overrides, ListConfig):
        return [str(o) for o in overrides]
    typed = OmegaConf.to_container(overrides, resolve=False)
    out = []
    for index, literal in enumerate(typed):
        try:
            out.append(str(overrides[index]))
        except Exception:
            out.append(str(literal))
    return out


OmegaConf.register_new_resolver(
    "charlm.run_name",
    lambda stamp, overrides, exclude: run_name(str(stamp), as_typed(overrides), [str(k) for k in exclude]),
    replace=True,
)
