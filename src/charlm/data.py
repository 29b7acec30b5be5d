"""The character-level data module: one prepared corpus, two batching modes, one validation.

The ids live in a prepared file (`charlm.prepared`) that batches are read from, so a corpus of
any size trains in the memory of a small one; the splits are views of it: train, then val, then test.

Training batches are a pure function of (seed, batch index, rank): nothing hidden needs
saving for an exact resume, and the data order continues where a checkpoint left it.

- random: each row is a window of block_size + 1 characters at a random offset
  (nanoGPT style); an epoch is `epoch_batches` batches.
- stream: the training split is cut into batch_size x world_size contiguous streams; row b
  of batch i + 1 continues row b of batch i (char-rnn style), so recurrent models can carry
  their hidden state; an epoch is one pass over the streams.

Validation is the same for every model: the val split in non-overlapping windows of
block_size, each read from a fresh state, the last one padded and masked. A val split longer
than `val_max_chars` is represented by evenly spaced windows, the same ones at every validation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from charlm.checks import require_positive
from charlm.corpus import corpus_files, default_cache_dir
from charlm.errors import CharLMError
from charlm.loss import IGNORE
from charlm.prepared import Prepared, Tokens, prepare
from charlm.vocab import Vocab

log = logging.getLogger(__name__)

SAMPLING_MODES = ("random", "stream")
SPLITS = ("train", "val", "test")
Ids = torch.Tensor | Tokens  # an in-memory tensor or a prepared file of ids


def rows(ids: Ids, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) int64: row b is ids[starts[b] : starts[b] + length], from a tensor or a file alike."""
    if isinstance(ids, Tokens):
        return ids.rows(starts, length)
    return ids[starts.view(-1, 1) + torch.arange(length)].long()


def batch_generator(seed: int, index: int, rank: int) -> torch.Generator:
    """A generator that depends only on (seed, batch index, rank)."""
    mixed = np.random.SeedSequence([seed, index, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


class TrainBatches(IterableDataset):
    """Yields whole batches {x, y, reset}, starting at the batch index `position()` returns."""

    def __init__(
        self,
        ids: Ids,
        block_size: int,
        batch_size: int,
        sampling: str,
        seed: int,
        epoch_batches: int,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] = lambda: 0,
    ):
        self.ids, self.T, self.B, self.sampling, self.seed = ids, block_size, batch_size, sampling, seed
        self.rank, self.position = rank, position
        if sampling == "stream":
            streams = batch_size * world_size
            stream_len = (len(ids) - 1) // streams
            self.epoch_len = stream_len // block_size
            first = torch.arange(rank * batch_size, (rank + 1) * batch_size) * stream_len
            self.stream_starts = first.unsqueeze(1)  # (B, 1)
        else:
            self.epoch_len = epoch_batches

    def __len__(self) -> int:
        return self.epoch_len

    def batch(self, index: int) -> dict:
        if self.sampling == "stream":
            step = index % self.epoch_len
            batch = rows(self.ids, self.stream_starts + step * self.T, self.T + 1)  # (B, T + 1)
            reset = step == 0
        else:
            g = batch_generator(self.seed, index, self.rank)
            starts = torch.randint(0, len(self.ids) - self.T, (self.B, 1), generator=g)
            batch = rows(self.ids, starts, self.T + 1)  # (B, T + 1)
            reset = True
        return {"x": batch[:, :-1], "y": batch[:, 1:], "reset": reset}

    def __iter__(self) -> Iterator[dict]:
        start = self.position()
        end = (start // self.epoch_len + 1) * self.epoch_len  # this epoch's remaining batches
        for index in range(start, end):
            yield self.batch(index)


class Windows(Dataset):
    """Non-overlapping windows of `ids`, each an (x, y) pair of block_size inputs and targets.

    Together the windows make every next-character prediction of `ids` exactly once; the last is
    padded, its padding masked with IGNORE. `keep` picks which windows (by index) the dataset holds.
    """

    def __init__(self, ids: Ids, block_size: int, keep: np.ndarray | None = None):
        self.ids, self.T = ids, block_size
        self.total = -(-(len(ids) - 1) // block_size)  # ceil: windows covering every target
        self.keep = np.arange(self.total) if keep is None else keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(self.keep[i]) * self.T
        stop = min(start + self.T + 1, len(self.ids))
        piece = rows(self.ids, torch.tensor([start]), stop - start)[0]
        x = torch.zeros(self.T, dtype=torch.long)
        y = torch.full((self.T,), IGNORE, dtype=torch.long)
        x[: len(piece) - 1], y[: len(piece) - 1] = piece[:-1], piece[1:]
        return x, y

    def chars(self) -> int:
        """How many targets these windows score."""
        return int(np.minimum(self.T, (len(self.ids) - 1) - self.keep * self.T).sum())


def evenly_spaced(total: int, k: int) -> np.ndarray:
    """k of `total` indices spread evenly from the first to the last: a fixed, representative subset."""
    return np.unique(np.linspace(0, total - 1, k).round().astype(np.int64))


def validation_windows(ids: Ids, block_size: int, max_chars: int | None = None) -> Windows:
    """The val split's windows: all of them, or evenly spaced ones covering about `max_chars` characters."""
    every = Windows(ids, block_size)
    if max_chars is None or every.total * block_size <= max_chars:
        return every
    return Windows(ids, block_size, keep=evenly_spaced(every.total, max(1, max_chars // block_size)))


class StepDataModule(L.LightningDataModule):
    """What every charlm data module shares: batches indexed by training step, sharded by rank.

    The loaders get generators of their own: a DataLoader otherwise draws a seed from the global
    RNG each time it is iterated, and a resumed run would then draw other dropout masks than an
    uninterrupted one.
    """

    pin_memory: bool = True

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def batches_done(self) -> int:
        """Batches consumed so far: where the data order resumes after a checkpoint.

        With `trainer.overfit_batches` the order wraps around the first N batches (Lightning's
        `num_training_batches` then), so every epoch trains on the same ones, as Lightning documents.
        """
        if self.trainer is None:
            return 0
        done = self.trainer.global_step * self.trainer.accumulate_grad_batches
        if self.trainer.overfit_batches > 0 and math.isfinite(self.trainer.num_training_batches):
            return done % max(1, int(self.trainer.num_training_batches))
        return done

    def loader(self, dataset, **kwargs) -> DataLoader:
        pin = self.pin_memory and torch.cuda.is_available()
        return StepLoader(dataset, pin_memory=pin, generator=torch.Generator(), **kwargs)


class StepLoader(DataLoader):
    """A DataLoader that tells Lightning it resumes exactly (it does: batches are a function of the step
    reached, which the checkpoint holds), so a resume mid-epoch is not warned about as unreliable."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CharDataModule(StepDataModule):
    def __init__(
        self,
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        cache_dir: str | None = None,
        block_size: int = 256,
        batch_size: int = 64,
        sampling: str = "random",
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        val_max_chars: int | None = 1_000_000,
        epoch_batches: int = 1000,
        val_batch_size: int | None = None,
        seed: int = 1337,
        pin_memory: bool = True,
    ):
        super().__init__()
        require_positive(
            **{"data.block_size": block_size, "data.batch_size": batch_size, "data.epoch_batches": epoch_batches}
        )
        if val_max_chars is not None:
            require_positive(**{"data.val_max_chars": val_max_chars})
        if sampling not in SAMPLING_MODES:
            raise CharLMError(f"data.sampling={sampling!r} is not valid; choose one of {', '.join(SAMPLING_MODES)}")
        if not 0.0 < val_fraction < 1.0:
            raise CharLMError(f"data.val_fraction={val_fraction!r} must be between 0 and 1 (exclusive)")
        if not 0.0 <= test_fraction < 1.0 - val_fraction:
            raise CharLMError(
                f"data.test_fraction={test_fraction!r} must be at least 0 and leave a train split "
                f"(below 1 - data.val_fraction = {1 - val_fraction:g})"
            )
        self.path, self.url, self.sha256, self.cache_dir = path, url, sha256, cache_dir
        self.block_size, self.batch_size, self.sampling = block_size, batch_size, sampling
        self.val_fraction, self.test_fraction, self.val_max_chars = val_fraction, test_fraction, val_max_chars
        self.epoch_batches, self.seed = epoch_batches, seed
        self.val_batch_size = val_batch_size or batch_size
        self.pin_memory = pin_memory
        self.vocab: Vocab | None = None
        self.splits: dict[str, Tokens] = {}
        self._subset_logged = False  # the val subset is announced once, not at every validation

    def prepare_data(self) -> None:
        """Download and prepare the corpus once per machine; under DDP every rank then maps the result.
        Skipped where `setup` has already run in this process (the train job calls it first)."""
        if self.vocab is None:
            self.prepared()

    def prepared(self) -> Prepared:
        cache_dir = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        return prepare(corpus_files(self.path, self.url, self.sha256, cache_dir), cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        prepared = self.prepared()
        self.vocab, ids = prepared.vocab, prepared.tokens
        n = len(ids)
        val_start = int(n * (1 - self.val_fraction - self.test_fraction))
        test_start = int(n * (1 - self.test_fraction)) if self.test_fraction else n
        self.splits = {"train": ids[:val_start], "val": ids[val_start:test_start], "test": ids[test_start:]}
        self._check_sizes()

    @property
    def train_ids(self) -> Tokens:
        return self.splits["train"]

    @property
    def val_ids(self) -> Tokens:
        return self.splits["val"]

    def _check_sizes(self) -> None:
        where = self.path or self.url
        if len(self.val_ids) < 2:
            raise CharLMError(
                f"corpus {where} is too short: its val split has {len(self.val_ids)} characters, "
                "at least 2 are needed for one validation window"
            )
        self._check_train_size()

    def _check_train_size(self) -> None:
        """One training batch fits the train split; in stream mode it depends on the world size.

        Run again when the loaders are built: `setup()` may run before the Trainer exists, when the
        world size still reads 1.
        """
        where = self.path or self.url
        world = self.world_size
        streams = self.batch_size * world
        need = self.block_size + 1 if self.sampling == "random" else streams * self.block_size + 1
        if len(self.train_ids) < need:
            per = f" at world size {world} ({world} x data.batch_size streams)" if world > 1 else ""
            raise CharLMError(
                f"corpus {where} is too short: its train split has {len(self.train_ids)} characters, "
                f"one training batch{per} needs {need} (lower data.block_size={self.block_size} "
                f"or data.batch_size={self.batch_size}, or use a longer text)"
            )

    def train_dataloader(self) -> DataLoader:
        self._check_train_size()
        batches = TrainBatches(
            self.train_ids,
            block_size=self.block_size,
            batch_size=self.batch_size,
            sampling=self.sampling,
            seed=self.seed,
            epoch_batches=self.epoch_batches,
            rank=self.rank,
            world_size=self.world_size,
            position=self.batches_done,
        )
        return self.loader(batches, batch_size=None)

    def val_windows(self) -> Windows:
        """The windows every validation scores (and `charlm-evaluate` by default)."""
        windows = validation_windows(self.val_ids, self.block_size, self.val_max_chars)
        if len(windows) < windows.total and not self._subset_logged:
            self._subset_logged = True
            log.info(
                f"validating on {len(windows):,} evenly spaced of the val split's {windows.total:,} windows "
                f"({windows.chars():,} of {len(self.val_ids) - 1:,} characters; "
                f"data.val_max_chars={self.val_max_chars})"
            )
        return windows

    def val_dataloader(self) -> DataLoader:
        return self.sharded(self.val_windows())

    def test_dataloader(self) -> DataLoader:
        """`test=true`: the test split (data.test_fraction) in validation's windows, scored whole."""
        self.check_test_split()
        return self.sharded(Windows(self.splits["test"], self.block_size))

    def check_test_split(self) -> None:
        if len(self.splits["test"]) < 2:
            raise CharLMError(
                f"test=true scores the test split, which data.test_fraction={self.test_fraction} leaves empty; "
                "set data.test_fraction (e.g. 0.05: the last 5% of the text, never trained or validated on)"
            )

    def sharded(self, windows: Windows) -> DataLoader:
        windows.keep = windows.keep[self.rank :: self.world_size]  # each rank a disjoint share
        return self.loader(windows, batch_size=self.val_batch_size)
