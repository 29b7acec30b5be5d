"""Finding, downloading and reading a text corpus, in chunks so that no size is too large.

Encoding it into ids, once per text, is `charlm.prepared`'s work.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from charlm.errors import CharLMError

DOWNLOAD_TIMEOUT_S = 30
CHUNK_BYTES = 4 << 20  # text is read in pieces this large: memory stays flat whatever the corpus size


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


def text_chunks(files: list[Path]) -> Iterator[tuple[bytes, str]]:
    """The corpus text in pieces of about CHUNK_BYTES, each as (bytes read, text decoded).

    The bytes of all pieces joined are the text's UTF-8 bytes (a character split between two reads
    is decoded with the second).

    Files are joined in order; when there are several, each ends with a newline (one is added
    where a file lacks it), so the last line of one file never runs into the first of the next.
    A bad byte is reported with its file and byte offset.
    """
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, last = 0, ""
        with path.open("rb") as fh:
            while True:
                raw = fh.read(CHUNK_BYTES)
                buffered = len(decoder.buffer)
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as err:
                    at = offset - buffered + err.start
                    with path.open("rb") as again:
                        again.seek(at)
                        bad = again.read(1)[0]
                    raise CharLMError(f"{path} is not valid UTF-8: bad byte {bad:#04x} at byte offset {at}") from None
                if text or raw:
                    last = text[-1] if text else last
                    yield raw, text
                if not raw:
                    break
                offset += len(raw)
        if len(files) > 1 and last != "\n":
            yield b"\n", "\n"


def read_text(path: Path) -> str:
    """One UTF-8 file's whole text; a bad byte is named with its offset."""
    return "".join(text for _, text in text_chunks([path]))


def read_corpus(path: str | os.PathLike) -> str:
    """The whole text of `path` as one string, for texts small enough to hold (see `charlm.prepared`)."""
    text = "".join(text for _, text in text_chunks(text_files(path)))
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


def corpus_files(path: str | None, url: str | None, sha256: str | None, cache_dir: str | Path | None) -> list[Path]:
    """The corpus's files: those `path` names when given, else the download of `url` in the cache."""
    if path:
        return text_files(path)
    if not url:
        raise CharLMError("no corpus given: set data.path=FILE (or a data config with a download url)")
    downloaded = download(url, sha256, Path(cache_dir) if cache_dir else default_cache_dir())
    return [unzipped(downloaded) if downloaded.suffix == ".zip" else downloaded]


def unzipped(archive: Path) -> Path:
    """The one file inside a downloaded .zip (enwik8 and text8 come so), extracted beside it once."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise CharLMError(f"{archive} holds {len(members)} files; a corpus archive must hold exactly one")
        target = archive.with_name(Path(members[0].filename).name)
        if not (target.is_file() and target.stat().st_size == members[0].file_size):
            fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=target.name, suffix=".part")
            with os.fdopen(fd, "wb") as out, zf.open(members[0]) as member:
                for chunk in iter(lambda: member.read(CHUNK_BYTES), b""):
                    out.write(chunk)
            os.replace(tmp, target)
    return target


def load_corpus(path: str | None, url: str | None, sha256: str | None, cache_dir: str | Path | None) -> str:
    """The corpus text as one string: from `path` when given, else downloaded from `url` into the cache."""
    text = "".join(text for _, text in text_chunks(corpus_files(path, url, sha256, cache_dir)))
    if not text:
        raise CharLMError(f"the corpus {path or url} is empty; a corpus needs at least a few hundred characters")
    return text
