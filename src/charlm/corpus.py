"""Finding, downloading, reading and encoding a text corpus.

A corpus is read and encoded once: the encoded ids are cached in the cache folder under
the sha256 of the text, so a second run with the same text starts at once and a changed
text is re-encoded.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

from charlm.errors import CharLMError
from charlm.vocab import Vocab

DOWNLOAD_TIMEOUT_S = 30


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHARLM_CACHE", Path.home() / ".cache" / "charlm"))


def text_files(path: str | os.PathLike) -> list[Path]:
    """The files a `data.path` names: a file, every `.txt` under a directory, or a glob's matches."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise CharLMError(f"data.path={str(path)!r} is a directory with no .txt files in it")
        return files
    if glob.has_magic(str(p)):
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        if not files:
            raise CharLMError(f"data.path={str(path)!r} is a glob that matches no files")
        return files
    raise CharLMError(f"data.path={str(path)!r} does not exist; give a text file, a directory of .txt files or a glob")


def read_text(path: Path) -> str:
    """Decode one UTF-8 file, naming the file and byte offset of the first bad byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start]
        raise CharLMError(f"{path} is not valid UTF-8: bad byte {bad:#04x} at byte offset {err.start}") from None


def read_corpus(path: str | os.PathLike) -> str:
    """All files of `path` joined by newlines, refusing an empty result."""
    texts = [read_text(f) for f in text_files(path)]
    text = "\n".join(t.rstrip("\n") for t in texts) + "\n" if len(texts) > 1 else texts[0]
    if not text:
        raise CharLMError(f"data.path={str(path)!r} is empty; a corpus needs at least a few hundred characters")
    return text


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, sha256: str | None, cache_dir: Path) -> Path:
    """The cached copy of `url`, fetched once and checked against `sha256` before it is kept."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / Path(url.split("?")[0]).name
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256):
        return target
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        got = sha256_file(tmp)
        if sha256 is not None and got != sha256:
            raise CharLMError(
                f"download of {url} has sha256 {got}, expected {sha256}; the file was not kept "
                "(pass data.path=FILE to use a local copy)"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CharLMError(f"could not download {url}: {reason} (pass data.path=FILE to use a local copy)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def encoded_corpus(text: str, cache_dir: Path) -> tuple[Vocab, torch.Tensor]:
    """Vocabulary and ids of `text`, from the cache when this exact text was encoded before."""
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    cached = cache_dir / "encoded" / f"{key}.pt"
    if cached.is_file():
        try:
            blob = torch.load(cached, weights_only=True)
            return Vocab(blob["vocab"]), blob["ids"].long()
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            cached.unlink(missing_ok=True)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    small = ids.to(torch.uint8 if len(vocab) <= 256 else torch.int32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".part")
    os.close(fd)
    torch.save({"vocab": vocab.chars, "ids": small}, tmp)
    os.replace(tmp, cached)
    return vocab, ids


def load_corpus(path: str | None, url: str | None, sha256: str | None, cache_dir: str | Path | None) -> str:
    """The corpus text: from `path` when given, else downloaded from `url` into the cache."""
    if path:
        return read_corpus(path)
    if not url:
        raise CharLMError("no corpus given: set data.path=FILE (or a data config with a download url)")
    return read_corpus(download(url, sha256, Path(cache_dir) if cache_dir else default_cache_dir()))
