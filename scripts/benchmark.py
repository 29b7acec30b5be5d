"""Throughput benchmarks (see charlm.benchmark):
    python scripts/benchmark.py train --data /path/tinyshakespeare.txt --steps 50
    python scripts/benchmark.py generate --data /path/tinyshakespeare.txt --tokens 1000 --block-size 256
"""

from charlm.benchmark import CONF_DIR, main
from charlm.cli import ConfigSource, run_app


def cli() -> None:
    run_app(main, ConfigSource(str(CONF_DIR), "train"))


if __name__ == "__main__":
    cli()
