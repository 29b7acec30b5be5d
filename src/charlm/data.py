"""The character-level data module: one encoded tensor, two batching modes, one validation.

Training batches are a pure function of (seed, batch index, rank): nothing hidden needs
saving for an exact resume, and the data order continues where a checkpoint left it.

- random: each row is a window of block_size + 1 characters at a random offset
  (nanoGPT style); an epoch is `epoch_batches` batches.
- stream: the training split is cut into batch_size x world_size contiguous streams; row b
  of batch i + 1 continues row b of batch i (char-rnn style), so recurrent models can carry
  their hidden state; an epoch is one pass over the streams.

Validation is the same for every model: the whole val split in non-overlapping windows of
block_size, each read from a fresh state, the last one padded and masked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from charlm.checks import require_positive
from charlm.corpus import default_cache_dir, encoded_corpus, load_corpus
from charlm.errors import CharLMError
from charlm.loss import IGNORE
from charlm.vocab import Vocab

SAMPLING_MODES = ("random", "stream")


def batch_generator(seed: int, index: int, rank: int) -> torch.Generator:
    """A generator that depends only on (seed, batch index, rank)."""
    mixed = np.random.SeedSequence([seed, index, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


class TrainBatches(IterableDataset):
    """Yields whole batches {x, y, reset}, starting at the batch index `position()` returns."""

    def __init__(
        self,
        ids: torch.Tensor,
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
        self.offsets = torch.arange(block_size + 1)
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
            rows = self.ids[self.stream_starts + step * self.T + self.offsets]  # (B, T + 1)
            reset = step == 0
        else:
            g = batch_generator(self.seed, index, self.rank)
            starts = torch.randint(0, len(self.ids) - self.T, (self.B, 1), generator=g)
            rows = self.ids[starts + self.offsets]  # (B, T + 1)
            reset = True
        return {"x": rows[:, :-1], "y": rows[:, 1:], "reset": reset}

    def __iter__(self) -> Iterator[dict]:
        start = self.position()
        end = (start // self.epoch_len + 1) * self.epoch_len  # this epoch's remaining batches
        for index in range(start, end):
            yield self.batch(index)


def validation_windows(ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every next-character prediction of `ids` exactly once: (N, T) inputs and targets."""
    n_targets = len(ids) - 1
    n = -(-n_targets // block_size)  # ceil
    x = torch.zeros(n * block_size, dtype=torch.long)
    y = torch.full((n * block_size,), IGNORE, dtype=torch.long)
    x[:n_targets], y[:n_targets] = ids[:-1], ids[1:]
    return x.view(n, block_size), y.view(n, block_size)


class StepDataModule(L.LightningDataModule):
    """What every charlm data module shares: batches indexed by training step, sharded by rank.

    The loaders get generators of their own: a DataLoader otherwise draws a seed from the global
    RNG each time it is iterated, and a resumed run would then draw other dropout masks than an
    uninterrupted one.
    """

    task: str = "lm"  # what its batches train: "lm" (next character) or "seq2seq" (pairs)
    pin_memory: bool = True

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def batches_done(self) -> int:
        """Batches consumed so far: where the data order resumes after a checkpoint."""
        if self.trainer is None:
            return 0
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def loader(self, dataset, **kwargs) -> DataLoader:
        pin = self.pin_memory and torch.cuda.is_available()
        return DataLoader(dataset, pin_memory=pin, generator=torch.Generator(), **kwargs)


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
        epoch_batches: int = 1000,
        val_batch_size: int | None = None,
        seed: int = 1337,
        pin_memory: bool = True,
    ):
        super().__init__()
        require_positive(
            **{"data.block_size": block_size, "data.batch_size": batch_size, "data.epoch_batches": epoch_batches}
        )
        if sampling not in SAMPLING_MODES:
            raise CharLMError(f"data.sampling={sampling!r} is not valid; choose one of {', '.join(SAMPLING_MODES)}")
        if not 0.0 < val_fraction < 1.0:
            raise CharLMError(f"data.val_fraction={val_fraction!r} must be between 0 and 1 (exclusive)")
        self.path, self.url, self.sha256, self.cache_dir = path, url, sha256, cache_dir
        self.block_size, self.batch_size, self.sampling = block_size, batch_size, sampling
        self.val_fraction, self.epoch_batches, self.seed = val_fraction, epoch_batches, seed
        self.val_batch_size = val_batch_size or batch_size
        self.pin_memory = pin_memory
        self.vocab: Vocab | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        text = load_corpus(self.path, self.url, self.sha256, self.cache_dir)
        self.vocab, ids = encoded_corpus(text, Path(self.cache_dir) if self.cache_dir else default_cache_dir())
        cut = int(len(ids) * (1 - self.val_fraction))
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]
        self._check_sizes()

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

    def val_dataloader(self) -> DataLoader:
        x, y = validation_windows(self.val_ids, self.block_size)
        x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]  # each rank a disjoint share
        return self.loader(TensorDataset(x, y), batch_size=self.val_batch_size)
