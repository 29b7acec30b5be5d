"""Train a character-level language model: python scripts/train.py model=lstm trainer.devices=1

The same command as `charlm-train` (charlm.cli.app).
"""

from charlm.cli.app import train_cli as cli

if __name__ == "__main__":
    cli()
