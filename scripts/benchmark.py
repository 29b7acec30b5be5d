"""Throughput benchmarks (see charlm.benchmark):
    python scripts/benchmark.py train --data /path/tinyshakespeare.txt --steps 50
    python scripts/benchmark.py generate --data /path/tinyshakespeare.txt --tokens 1000 --block-size 256
"""

from charlm.benchmark import main
from charlm.errors import exit_on_user_error

if __name__ == "__main__":
    exit_on_user_error(main)()
