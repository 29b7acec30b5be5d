"""Score a text with a checkpoint: python scripts/evaluate.py ckpt_path=RUN_DIR [text_file=PATH] [context=stream]

The same command as `charlm-evaluate` (charlm.cli.app).
"""

from charlm.cli.app import evaluate_cli as cli

if __name__ == "__main__":
    cli()
