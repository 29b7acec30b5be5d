"""The allocator setting a run applies: freed memory is reused instead of faulted in afresh."""

import resource

import pytest
import torch

from charlm.memory import glibc, release_free_memory, reuse_freed_memory

pytestmark = pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's; elsewhere the setting does nothing")


def page_faults_of_repeated_buffers(rounds: int = 4, mb: int = 64) -> int:
    """Minor page faults of allocating, touching and freeing the same big buffer, after two warm-up rounds."""
    for _ in range(2):
        torch.empty(mb * 2**20, dtype=torch.uint8).fill_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.empty(mb * 2**20, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_reusing_freed_memory_spares_the_page_faults_of_a_buffer_freed_every_step() -> None:
    try:
        assert reuse_freed_memory(True)
        page_faults_of_repeated_buffers()  # the heap grows until the buffer fits in it
        reused = page_faults_of_repeated_buffers()
        assert reuse_freed_memory(False)
        release_free_memory()  # what the heap holds now must not serve the next buffers
        fresh = page_faults_of_repeated_buffers()
    finally:
        reuse_freed_memory(False)
    assert fresh >= 10, "without the setting a freed 64 MB buffer comes back as fresh pages"
    assert reused * 10 <= fresh, (reused, fresh)
