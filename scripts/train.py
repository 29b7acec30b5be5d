"""Train a character-level language model: python scripts/train.py model=lstm trainer.devices=1

The same command as `charlm-train` (charlm.cli.app).
"""

import sys
from pathlib import Path

# scripts/inspect.py shares its name with the standard library's `inspect`, which Hydra and torch import:
# this folder leaves the import path before anything else is imported.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from charlm.cli.app import train_cli as cli  # noqa: E402

if __name__ == "__main__":
    cli()
