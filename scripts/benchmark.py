"""Throughput against plain PyTorch loops: python scripts/benchmark.py train (see charlm.tooling.benchmark)

The same command as `charlm-benchmark` (charlm.cli.app).
"""

from charlm.cli.app import benchmark_cli as cli

if __name__ == "__main__":
    cli()
