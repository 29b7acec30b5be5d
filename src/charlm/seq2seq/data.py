"""Source/target pairs for the seq2seq model: reading, the vocabulary with special tokens,
and the data module.

A pairs file holds one `source<separator>target` pair per line (a tab by default), or is a
`.csv` file whose first two columns are source and target under a header row. Without a
file, a demo task is made from Tiny Shakespeare: each line of the play -> that line
reversed, which an attention model learns visibly within a few CPU minutes.

Training batches are a pure function of (seed, batch index, rank), as in `data.py`: a
resumed run continues the data order where its checkpoint left it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

from charlm.checks import require_positive
from charlm.corpus import load_corpus
from charlm.data import StepDataModule, batch_generator
from charlm.errors import CharLMError
from charlm.loss import IGNORE
from charlm.vocab import Vocab

Pair = tuple[str, str]
PAD, BOS, EOS = 0, 1, 2  # the special ids, before every character
DEMO_TASKS = ("reverse", "restore")


class PairVocab:
    """Characters of sources and targets after three special tokens: <pad>=0, <bos>=1, <eos>=2.

    Wraps a plain `Vocab` so that unknown characters get the language models' error message,
    and so a checkpoint stores only the character string: the specials are implied.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>")
    PAD, BOS, EOS = PAD, BOS, EOS  # the module's, as attributes too

    def __init__(self, chars: str):
        self.base = Vocab(chars)
        self.chars = chars

    @classmethod
    def from_pairs(cls, pairs: list[Pair]) -> PairVocab:
        text = "".join(s + t for s, t in pairs)
        if not text:
            raise CharLMError("the pairs have no characters at all: every source and target is empty")
        return cls(Vocab.from_text(text).chars)

    def __len__(self) -> int:
        return len(self.chars) + len(self.SPECIALS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairVocab) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"PairVocab({len(self.chars)} chars + <pad>, <bos>, <eos>: {self.chars!r})"

    def encode(self, text: str) -> torch.Tensor:
        """Ids of `text`, without specials: a 1-D int64 tensor."""
        return self.base.encode(text) + len(self.SPECIALS)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Text of `ids` up to the first <eos>; <pad> and <bos> are dropped."""
        out = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if i == self.EOS:
                break
            if i >= len(self.SPECIALS):
                out.append(self.chars[i - len(self.SPECIALS)])
        return "".join(out)


# ---------------------------------------------------------------------------------------- reading


def read_utf8(path: Path) -> str:
    """The file's text, or an error naming the file, line and byte offset of the first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CharLMError(
            f"{path} line {line} is not valid UTF-8: bad byte {raw[err.start]:#04x} at byte offset {err.start}"
        ) from None


def parse_separated(text: str, path: Path, separator: str) -> list[Pair]:
    """Pairs from `source<separator>target` lines; only the first separator splits, blank lines are skipped."""
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        if separator not in line:
            raise CharLMError(
                f"{path} line {number} has no separator {separator!r} (expected source{separator}target): {line[:60]!r}"
            )
        source, target = line.split(separator, 1)
        pairs.append((source, target))
    return pairs


def parse_csv(text: str, path: Path) -> list[Pair]:
    """Pairs from the first two columns of a CSV file; its first row is a header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    pairs = []
    try:
        for row in reader:
            if reader.line_num == 1 or not row:
                continue
            if len(row) < 2:
                raise CharLMError(
                    f"{path} line {reader.line_num} has {len(row)} column; expected source,target columns"
                )
            pairs.append((row[0], row[1]))
    except csv.Error as err:
        raise CharLMError(f"{path} line {reader.line_num} is not valid CSV: {err}") from None
    return pairs


def read_pairs(path: str | Path, separator: str = "\t") -> list[Pair]:
    """All pairs of a file, refusing a missing or empty file with a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CharLMError(f"data.path={str(path)!r} does not exist; give a file of source{separator}target lines")
    if not separator:
        raise CharLMError("data.separator must not be empty")
    text = read_utf8(path)
    pairs = parse_csv(text, path) if path.suffix.lower() == ".csv" else parse_separated(text, path, separator)
    if not pairs:
        raise CharLMError(f"{path} line 1: the file is empty; it needs source{separator}target pairs, one per line")
    return pairs


def demo_pairs(text: str, task: str, max_chars: int | None) -> list[Pair]:
    """The demo task from a play's text: one pair per non-blank line of at most `max_chars` characters.

    reverse: line -> line reversed. restore: lowercase without punctuation -> original line.
    """
    if task not in DEMO_TASKS:
        raise CharLMError(f"data.demo={task!r} is not valid; choose one of {', '.join(DEMO_TASKS)}")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and (max_chars is None or len(ln) <= max_chars)]
    if task == "reverse":
        return [(ln, ln[::-1]) for ln in lines]
    return [("".join(c for c in ln.lower() if c.isalnum() or c == " "), ln) for ln in lines]


# ---------------------------------------------------------------------------------------- batching


def encode_pairs(pairs: list[Pair], vocab: PairVocab) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each pair as (source + <eos>, target) ids: the <eos> keeps an empty source readable."""
    eos = torch.tensor([vocab.EOS])
    return [(torch.cat([vocab.encode(s), eos]), vocab.encode(t)) for s, t in pairs]


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest source and target.

    x: (B, S) source ids, <pad> after the end; x_len: (B,) source lengths;
    dec_in: (B, T) <bos> + target, <pad> after the end; y: (B, T) target + <eos>, IGNORE after the end.
    """
    B = len(items)
    S = max(len(s) for s, _ in items)
    T = max(len(t) for _, t in items) + 1
    x = torch.full((B, S), PairVocab.PAD, dtype=torch.long)
    dec_in = torch.full((B, T), PairVocab.PAD, dtype=torch.long)
    y = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (s, t) in enumerate(items):
        x[b, : len(s)] = s
        dec_in[b, 0] = PairVocab.BOS
        dec_in[b, 1 : len(t) + 1] = t
        y[b, : len(t)] = t
        y[b, len(t)] = PairVocab.EOS
    x_len = torch.tensor([len(s) for s, _ in items])
    return {"x": x, "x_len": x_len, "dec_in": dec_in, "y": y}


class PairBatches(IterableDataset):
    """Padded training batches; each epoch a fresh seeded permutation, sharded by rank."""

    def __init__(
        self,
        items: list,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] = lambda: 0,
    ):
        self.items, self.B, self.seed, self.rank, self.world_size = items, batch_size, seed, rank, world_size
        self.position = position
        self.epoch_len = max(1, len(items) // (batch_size * world_size))

    def __len__(self) -> int:
        return self.epoch_len

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        epoch, step = divmod(index, self.epoch_len)
        order = torch.randperm(len(self.items), generator=batch_generator(self.seed, epoch, 0))
        first = (step * self.world_size + self.rank) * self.B
        rows = order[first : first + self.B].tolist()
        return collate([self.items[i] for i in rows])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start = self.position()
        end = (start // self.epoch_len + 1) * self.epoch_len
        for index in range(start, end):
            yield self.batch(index)


class PairsDataModule(StepDataModule):
    """Source/target pairs from `path` (or the Tiny Shakespeare demo), padded per batch."""

    def __init__(
        self,
        path: str | None = None,
        separator: str = "\t",
        val_path: str | None = None,
        val_fraction: float = 0.1,
        demo: str = "reverse",
        demo_max_chars: int | None = 40,
        text_path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        seed: int = 1337,
        pin_memory: bool = True,
    ):
        super().__init__()
        require_positive(**{"data.batch_size": batch_size})
        if not 0.0 < val_fraction < 1.0:
            raise CharLMError(f"data.val_fraction={val_fraction!r} must be between 0 and 1 (exclusive)")
        self.path, self.separator, self.val_path, self.val_fraction = path, separator, val_path, val_fraction
        self.demo, self.demo_max_chars, self.text_path = demo, demo_max_chars, text_path
        self.url, self.sha256, self.cache_dir = url, sha256, cache_dir
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.seed, self.pin_memory = seed, pin_memory
        self.vocab: PairVocab | None = None

    def load(self) -> tuple[list[Pair], list[Pair]]:
        """(train, val) pairs: from the files given, else the demo task."""
        if self.path:
            pairs = read_pairs(self.path, self.separator)
        else:
            text = load_corpus(self.text_path, self.url, self.sha256, self.cache_dir)
            pairs = demo_pairs(text, self.demo, self.demo_max_chars)
        if self.val_path:
            return pairs, read_pairs(self.val_path, self.separator)
        cut = int(len(pairs) * (1 - self.val_fraction))
        where = self.path or "the demo task"
        if cut < 1 or cut == len(pairs):
            raise CharLMError(
                f"{where} has {len(pairs)} pairs: too few to split into train and val "
                f"with data.val_fraction={self.val_fraction} (give more pairs or data.val_path)"
            )
        return pairs[:cut], pairs[cut:]

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        self.train_pairs, self.val_pairs = self.load()
        self.vocab = PairVocab.from_pairs(self.train_pairs + self.val_pairs)
        self.train_items = encode_pairs(self.train_pairs, self.vocab)
        self.val_items = encode_pairs(self.val_pairs, self.vocab)

    def train_dataloader(self) -> DataLoader:
        pairs, world = len(self.train_items), self.world_size
        if world > 1 and pairs < self.batch_size * world:  # a rank would get a short or empty batch
            lower = (
                f"lower data.batch_size to at most {pairs // world} or trainer.devices"
                if pairs >= world
                else "lower trainer.devices"
            )
            raise CharLMError(
                f"{self.path or 'the demo task'} has {pairs} training pairs, fewer than data.batch_size="
                f"{self.batch_size} x world size {world} = {self.batch_size * world}: {lower}, or give more pairs"
            )
        batches = PairBatches(
            self.train_items, self.batch_size, self.seed, self.rank, self.world_size, self.batches_done
        )
        return self.loader(batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        items = self.val_items[self.rank :: self.world_size]  # each rank a disjoint share
        return self.loader(items, batch_size=self.val_batch_size, collate_fn=collate)
