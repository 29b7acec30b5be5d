"""result.json: one run's record (model size, val/loss history, then status, error and wall time).

The training callback `RunResult` writes the first part, the sweep's Hydra callback the second;
sweep summaries read it, so a job's numbers are there even without a TensorBoard logger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def read_result(job_dir: Path) -> dict[str, Any]:
    path = Path(job_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def update_result(job_dir: str | Path, **fields: Any) -> None:
    """Merge `fields` into the job's result.json; written whole, so a reader never sees half a file."""
    path = Path(job_dir) / RESULT_FILE
    record = {**read_result(path.parent), **fields}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
