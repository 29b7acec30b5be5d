"""A corpus prepared once into an on-disk array of character ids, read back window by window.

Memory must not grow with the corpus, so preparation streams the text in chunks twice: the first
pass hashes it and counts every character (that count is the vocabulary), the second writes the
ids in the smallest dtype that holds the vocabulary (uint8 up to 256 characters, then uint16, then
int32). The result is kept under the text's content hash and reused by every later run; a small
index keyed by the files' paths, sizes and change times remembers that hash, so a second run
reads no text at all. Training then reads its windows from that file (`Tokens`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.corpus import text_chunks
from charlm.errors import CharLMError
from charlm.vocab import Vocab

log = logging.getLogger(__name__)

CODEPOINTS = 0x110000  # every Unicode code point is below this
PROGRESS_MIN_BYTES = 32 << 20  # smaller corpora prepare in about a second: no progress bar
UNKNOWN_MODES = ("error", "skip")
RACY_S = 2.0  # files modified this recently are not identified by size and time alone


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id of a vocabulary this large."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


class Tokens:
    """A run of ids in a file, read with positioned reads.

    Not a memory map: pages of a mapped file count in the process's resident memory once touched,
    and random windows over a large file touch most of it (measured: a 1 GiB corpus added 1.3 GB of
    RSS in a 30-step run). A read goes through the page cache, which the kernel shares and reclaims,
    so the process stays as small as with a short corpus. Slicing is free (a view of the same file)
    and pickling carries only the path, so spawned ranks and workers open the file themselves.
    """

    def __init__(self, path: str | Path, dtype: np.dtype | str, start: int = 0, stop: int | None = None):
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self.start = start
        self.stop = self.path.stat().st_size // self.dtype.itemsize if stop is None else stop
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, part: slice) -> Tokens:
        start, stop, step = part.indices(len(self))
        if step != 1:
            raise ValueError("Tokens take contiguous slices only")
        return Tokens(self.path, self.dtype, self.start + start, self.start + max(start, stop))

    def read(self, start: int, length: int) -> np.ndarray:
        """`length` ids from position `start` (of this slice) on."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = self.dtype.itemsize
        raw = os.pread(self._fd, length * size, (self.start + start) * size)
        return np.frombuffer(raw, dtype=self.dtype)

    def rows(self, starts: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length) int64 ids, row b read from position starts[b] on."""
        return torch.from_numpy(np.stack([self.read(int(s), length) for s in starts]).astype(np.int64))

    def tensor(self) -> torch.Tensor:
        """All ids as an int64 tensor: for short runs only, it holds 8 bytes per character."""
        return torch.from_numpy(self.read(0, len(self)).astype(np.int64))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


@dataclass
class Prepared:
    vocab: Vocab
    tokens: Tokens
    skipped: int  # characters left out because the given vocabulary lacks them (unknown="skip")


class Progress:
    """A byte-counting progress bar on stderr for the passes over a large corpus (none for a small one)."""

    def __init__(self, total_bytes: int, what: str):
        self.bar = None
        if total_bytes >= PROGRESS_MIN_BYTES:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, desc=what, unit="B", unit_scale=True, mininterval=1.0, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def scan(files: list[Path], progress: Progress) -> tuple[str, np.ndarray]:
    """The first pass: the sha256 of the text and how often each code point occurs in it."""
    digest = hashlib.sha256()
    counts = np.zeros(CODEPOINTS, dtype=np.int64)
    for raw, text in text_chunks(files):
        digest.update(raw)
        counts += np.bincount(codepoints(text), minlength=CODEPOINTS)
        progress.update(len(raw))
    return digest.hexdigest(), counts


def write_ids(files: list[Path], lookup: np.ndarray, dtype: np.dtype, target: Path, progress: Progress) -> int:
    """The second pass: each chunk's ids appended to `target`; ids of -1 (unknown) are dropped."""
    written = 0
    with target.open("wb") as out:
        for raw, text in text_chunks(files):
            ids = lookup[codepoints(text)]
            if ids.min(initial=0) < 0:
                ids = ids[ids >= 0]
            ids.astype(dtype).tofile(out)
            written += len(ids)
            progress.update(len(raw))
    return written


class PreparedStore:
    """The cache folder of prepared corpora: `<key>.ids` (raw ids) beside `<key>.json` (what they are)."""

    def __init__(self, cache_dir: Path):
        self.root = cache_dir / "prepared"

    def load(self, key: str) -> Prepared | None:
        """The prepared corpus under `key`, or None when it is missing, damaged or truncated."""
        meta_path, ids_path = self.root / f"{key}.json", self.root / f"{key}.ids"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            if ids_path.stat().st_size != meta["length"] * dtype.itemsize:
                return None
            return Prepared(Vocab(meta["vocab"]), Tokens(ids_path, dtype), int(meta["skipped"]))
        except (OSError, ValueError, KeyError, TypeError, CharLMError):
            return None

    def save(self, key: str, vocab: Vocab, dtype: np.dtype, write) -> Prepared:
        """Write ids with `write(tmp_path) -> (length, skipped)`, then their metadata; each lands atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=key, suffix=".part")
        os.close(fd)
        try:
            length, skipped = write(Path(tmp))
            os.replace(tmp, self.root / f"{key}.ids")
        finally:
            Path(tmp).unlink(missing_ok=True)
        meta = {"vocab": vocab.chars, "dtype": dtype.name, "length": length, "skipped": skipped}
        atomic_write(self.root / f"{key}.json", json.dumps(meta, ensure_ascii=False))
        return Prepared(vocab, Tokens(self.root / f"{key}.ids", dtype), skipped)

    def remembered_hash(self, files: list[Path]) -> str | None:
        try:
            return (self.root / "index" / stat_key(files)).read_text().strip() or None
        except OSError:
            return None

    def remember_hash(self, files: list[Path], content_hash: str) -> None:
        """Remember the hash unless a file changed in the last seconds: a change within the same
        clock tick would leave size and time as they were, so such a file is hashed again next time."""
        if max(max(f.stat().st_mtime, f.stat().st_ctime) for f in files) > time.time() - RACY_S:
            return
        (self.root / "index").mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "index" / stat_key(files), content_hash)


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def stat_key(files: list[Path]) -> str:
    """What identifies the files without reading them: path, inode, size, and the times of the last
    write and the last change of any kind (the latter cannot be set back, as a write's time can)."""
    stats = []
    for f in files:
        st = f.stat()
        stats.append((str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def cache_key(content_hash: str, vocab: Vocab | None, unknown: str) -> str:
    """Ids depend on the text and, when the vocabulary is given rather than found, on it too."""
    if vocab is None:
        return content_hash
    return hashlib.sha256(f"{content_hash}\0{vocab.chars}\0{unknown}".encode()).hexdigest()


def unknown_characters(counts: np.ndarray, vocab: Vocab) -> tuple[str, int]:
    """The characters the text has and `vocab` lacks, and how often they occur."""
    present = np.flatnonzero(counts)
    missing = present[~np.isin(present, codepoints(vocab.chars))]
    return "".join(map(chr, missing)), int(counts[missing].sum())


def prepare(
    files: list[Path], cache_dir: Path, vocab: Vocab | None = None, unknown: str = "error", name: str = "corpus"
) -> Prepared:
    """The ids of the text of `files`, prepared now or found in `cache_dir`.

    Without `vocab` the vocabulary is the text's own characters; with one (scoring a text with a
    trained model) its characters must cover the text, or with `unknown="skip"` the others are left out.
    """
    if unknown not in UNKNOWN_MODES:
        raise CharLMError(f"unknown={unknown!r} is not valid: expected one of {', '.join(UNKNOWN_MODES)}")
    store = PreparedStore(cache_dir)
    remembered = store.remembered_hash(files)
    if remembered is not None and (found := store.load(cache_key(remembered, vocab, unknown))) is not None:
        log.info(f"{name}: {len(found.tokens):,} characters prepared before, in {found.tokens.path}")
        return found

    started = time.perf_counter()
    total = sum(f.stat().st_size for f in files)
    progress = Progress(2 * total, f"preparing {name}")
    try:
        content_hash, counts = scan(files, progress)
        if not counts.any():
            raise CharLMError(f"{name} {files[0]} is empty; a corpus needs at least a few hundred characters")
        store.remember_hash(files, content_hash)
        key = cache_key(content_hash, vocab, unknown)
        if (found := store.load(key)) is not None:
            return found
        prepared = write_prepared(files, counts, store, key, vocab, unknown, progress)
    finally:
        progress.close()
    log.info(
        f"{name}: prepared {len(prepared.tokens):,} characters ({len(prepared.vocab)} distinct, "
        f"{prepared.tokens.dtype.name}) in {time.perf_counter() - started:.1f} s into {prepared.tokens.path}"
    )
    return prepared


def write_prepared(
    files: list[Path],
    counts: np.ndarray,
    store: PreparedStore,
    key: str,
    vocab: Vocab | None,
    unknown: str,
    progress: Progress,
) -> Prepared:
    skipped = 0
    if vocab is None:
        vocab = Vocab("".join(map(chr, np.flatnonzero(counts))))
    else:
        missing, skipped = unknown_characters(counts, vocab)
        if missing and unknown == "error":
            raise CharLMError(
                f"characters not in the model's vocabulary: {missing[:40]!r}{'...' if len(missing) > 40 else ''} "
                f"({skipped:,} occurrences); pass unknown=skip to score the rest"
            )
    lookup = np.full(CODEPOINTS, -1, dtype=np.int32)
    lookup[codepoints(vocab.chars)] = np.arange(len(vocab), dtype=np.int32)
    dtype = id_dtype(len(vocab))
    return store.save(key, vocab, dtype, lambda tmp: (write_ids(files, lookup, dtype, tmp, progress), skipped))
