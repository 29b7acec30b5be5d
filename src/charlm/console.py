"""What a training run prints: the run's own facts once, and none of the third-party notices that do not
concern a charlm user (a deprecation inside Lightning, a cloud-service tip, a warning about multi-worker
loading that charlm never does, a default restated).

stdout stays empty during training (the README's promise: stdout is only for what a command prints), so
Lightning's model table and progress bars, which it writes to stdout, go to stderr with the log.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator

# Python warnings raised by third-party code, by the start of their message
THIRD_PARTY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6's own use of a torch API
    r"Your `IterableDataset` has `__len__` defined",  # charlm loads in the main process: no workers to split
    r"The '.*' does not have many workers",  # batches are slices of one file, read in the main process
    r"You requested to overfit but enabled train dataloader shuffling",  # charlm repeats its own batches
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes on into its own checkpoints/
)
# Lightning's info lines that say nothing about this run
LIGHTNING_NOTICES = re.compile(
    r"💡 Tip:|`Trainer\(limit_(val|train|test)_batches=1.0\)` was configured|"
    r"Loading `train_dataloader` to estimate number of stepping batches|TPU available: False|"
    r"Trainer already configured with model summary callbacks"
)


class DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not LIGHTNING_NOTICES.search(record.getMessage())


def quiet_third_party() -> None:
    """Hide the notices above for the rest of the process (idempotent)."""
    for message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices())


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Anything printed to stdout inside (progress bars, tables, a library's banner) goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
