"""Look inside a model, one HTML page: python scripts/inspect.py ckpt_path=RUN_DIR text_file=book.txt

The same command as `charlm-inspect` (charlm.cli.app).
"""

import sys
from pathlib import Path

# This file's name is the standard library's `inspect`: with its folder first on the import path, every
# `import inspect` (Hydra's, torch's) would load this script instead, so the folder leaves the path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from charlm.cli.app import inspect_cli as cli  # noqa: E402

if __name__ == "__main__":
    cli()
