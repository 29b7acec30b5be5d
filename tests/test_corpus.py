"""Reading, downloading and caching corpora; the download is tested against a local HTTP server."""

import hashlib
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from charlm import CharLMError
from charlm.corpus import download, read_corpus


@pytest.fixture
def http_server(tmp_path: Path):
    """Serves tmp_path/www on 127.0.0.1; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()
    server.server_close()


def test_download_keeps_a_file_with_the_right_checksum_and_reuses_it(http_server, tmp_path):
    url, root = http_server
    (root / "input.txt").write_text("to be or not to be\n")
    sha = hashlib.sha256(b"to be or not to be\n").hexdigest()
    path = download(f"{url}/input.txt", sha, tmp_path / "cache")
    assert path.read_text() == "to be or not to be\n"
    (root / "input.txt").unlink()  # a second call must not need the server
    assert download(f"{url}/input.txt", sha, tmp_path / "cache") == path


def test_download_with_wrong_checksum_is_refused_and_not_kept(http_server, tmp_path):
    url, root = http_server
    (root / "input.txt").write_text("tampered\n")
    with pytest.raises(CharLMError, match="expected 0000"):
        download(f"{url}/input.txt", "0" * 64, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("input.txt*"))


def test_download_from_a_server_that_is_down_names_the_url(tmp_path):
    with pytest.raises(CharLMError, match="could not download http://127.0.0.1:9/input.txt"):
        download("http://127.0.0.1:9/input.txt", None, tmp_path / "cache")


def test_directory_and_glob_read_every_text_file(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_text("first book")
    (tmp_path / "books" / "b.txt").write_text("second book\n")
    (tmp_path / "books" / "notes.md").write_text("not a text file")
    assert read_corpus(tmp_path / "books") == "first book\nsecond book\n"
    assert read_corpus(str(tmp_path / "books" / "*.txt")) == "first book\nsecond book\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.txt", "does not exist"),
        (lambda d: (d / "empty.txt").write_text("") and d / "empty.txt" or d / "empty.txt", "is empty"),
        (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "no .txt files"),
        (lambda d: d / "nothing-*.txt", "matches no files"),
    ],
)
def test_bad_data_paths_get_one_line_errors(tmp_path, make, message):
    with pytest.raises(CharLMError, match=message) as err:
        read_corpus(make(tmp_path))
    assert "\n" not in str(err.value)


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(CharLMError, match=r"bad.txt is not valid UTF-8: bad byte 0xff at byte offset 6"):
        read_corpus(bad)


class FakeTrainer:
    """What a data module reads from its Trainer when it builds the loaders."""

    def __init__(self, world_size: int, global_rank: int = 0):
        self.world_size, self.global_rank = world_size, global_rank
        self.global_step, self.accumulate_grad_batches = 0, 1


def test_stream_corpus_too_short_for_all_ranks_is_refused_in_one_line_when_the_loader_is_built(tmp_path):
    from charlm.data import CharDataModule

    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 12, encoding="utf-8")  # train split 108 chars: 4 x 16 + 1 fit, 8 x 16 + 1 not
    dm = CharDataModule(path=str(path), block_size=16, batch_size=4, sampling="stream", val_fraction=0.1)
    dm.setup("fit")  # before the Trainer exists: world size 1, so the check passes
    assert next(iter(dm.train_dataloader()))["x"].shape == (4, 16)
    dm.trainer = FakeTrainer(world_size=2, global_rank=1)
    with pytest.raises(CharLMError) as info:
        dm.train_dataloader()
    message = str(info.value)
    assert "\n" not in message and "too short" in message and "world size 2" in message
    assert "data.block_size=16" in message and "data.batch_size=4" in message


def test_a_zipped_corpus_is_downloaded_once_and_its_one_file_extracted(http_server, tmp_path):
    import zipfile

    from charlm.corpus import corpus_files

    url, root = http_server
    with zipfile.ZipFile(root / "text8.zip", "w") as zf:
        zf.writestr("text8", " anarchism originated as a term of abuse")
    cache = tmp_path / "cache"
    [path] = corpus_files(None, f"{url}/text8.zip", None, cache)
    assert path == cache / "text8" and path.read_text() == " anarchism originated as a term of abuse"
    (root / "text8.zip").unlink()  # a second call needs neither the server nor a new extraction
    assert corpus_files(None, f"{url}/text8.zip", None, cache) == [path]
    with zipfile.ZipFile(root / "two.zip", "w") as zf:
        zf.writestr("a", "x")
        zf.writestr("b", "y")
    with pytest.raises(CharLMError, match="holds 2 files; a corpus archive must hold exactly one"):
        corpus_files(None, f"{url}/two.zip", None, cache)
