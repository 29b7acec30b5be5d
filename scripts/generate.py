"""Sample text from a checkpoint: python scripts/generate.py ckpt_path=RUN_DIR prompt="To be, or not to be"

The same command as `charlm-generate` (charlm.cli.app).
"""

from charlm.cli.app import generate_cli as cli

if __name__ == "__main__":
    cli()
