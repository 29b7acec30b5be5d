"""The allocator setting a run applies: freed memory is reused instead of faulted in afresh.

Each case runs in a new interpreter, so the heap starts as a training process's does."""

import subprocess
import sys

import pytest

from charlm.memory import glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's; elsewhere the setting does nothing")

PROBE = """
import resource, sys, torch
from charlm.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def step():  # a 64 MB buffer allocated, touched and freed, as a big workspace is every training step
    torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)
for _ in range(12):
    step()  # warm-up: the heap takes a few rounds to settle (up to 4, once 8, seen here) before the buffer fits
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_reusing_freed_memory_spares_the_page_faults_of_a_buffer_freed_every_step() -> None:
    fresh, reused = page_faults("glibc"), page_faults("reuse")
    assert fresh >= 10, "with glibc's defaults a freed 64 MB buffer comes back as fresh pages"
    assert reused * 10 <= fresh, (reused, fresh)
