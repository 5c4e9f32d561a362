"""fcspec.mnist: finding the files, and downloading them from a local HTTP
server on 127.0.0.1 that serves /work/shared/data/mnist (good mirror), a folder
of corrupted copies (bad checksums) and 404s for everything else.

The environment is isolated per test: the cache lives in tmp_path, FCSPEC_DATA
is unset unless a test sets it, and no real mirror is ever contacted.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA  # noqa: E402
from fcspec import data, ir, mnist
from fcspec.errors import DataError

MNIST = SHARED_DATA / "mnist"
pytestmark = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="needs /work/shared/data/mnist"
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FCSPEC_DATA", raising=False)
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"http://127.0.0.1:{_closed_port()}/")
    # A proxy from the environment would swallow requests to 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\0" * 8)
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Base URL of a server with /good/ (the real files) and /bad/ (corrupted copies)."""
    www = tmp_path / "www"
    (www / "bad").mkdir(parents=True)
    (www / "good").symlink_to(MNIST, target_is_directory=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        raw = bytearray((MNIST / name).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (www / "bad" / name).write_bytes(bytes(raw))
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www))
    )
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def cache(tmp_path) -> Path:
    return tmp_path / "xdg" / "fcspec" / "mnist"


def test_found_in_fcspec_data_first(monkeypatch, tmp_path):
    monkeypatch.setenv("FCSPEC_DATA", str(MNIST.parent))
    images, labels = mnist.mnist_files("train")
    assert images == MNIST / "train-images-idx3-ubyte.gz"
    assert labels == MNIST / "train-labels-idx1-ubyte.gz"
    assert not cache(tmp_path).exists()  # nothing downloaded, no folder made


def test_found_in_cache_unpacked_or_dotted_names(tmp_path):
    c = cache(tmp_path)
    c.mkdir(parents=True)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        (c / "t10k-labels-idx1-ubyte").write_bytes(f.read())
    shutil.copy(MNIST / "t10k-images-idx3-ubyte.gz", c / "t10k-images.idx3-ubyte")  # 7-Zip's name
    images, labels = mnist.mnist_files("test")
    assert images.name == "t10k-images.idx3-ubyte" and labels.name == "t10k-labels-idx1-ubyte"
    x, y = data.load_source(ir.DataSource("mnist", {"split": "test"}), tmp_path)
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)


def test_download_skips_a_404_mirror(monkeypatch, tmp_path, server):
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{server}/missing/, {server}/good")
    images, labels = mnist.mnist_files("test")
    c = cache(tmp_path)
    assert images == c / "t10k-images-idx3-ubyte.gz" and labels == c / "t10k-labels-idx1-ubyte.gz"
    assert images.read_bytes() == (MNIST / images.name).read_bytes()
    assert sorted(p.name for p in c.iterdir()) == [images.name, labels.name]  # no .part files
    # the loader now reads the downloaded copy
    x, y = data.load_source(ir.DataSource("mnist", {"split": "test"}), tmp_path)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        np.testing.assert_array_equal(y, np.frombuffer(f.read()[8:], np.uint8))
    # a second call finds the files and downloads nothing (the server may be gone)
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"http://127.0.0.1:{_closed_port()}/")
    assert mnist.mnist_files("test") == (images, labels)


def test_corrupt_download_is_an_error_and_not_kept(monkeypatch, tmp_path, server):
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{server}/bad/")
    with pytest.raises(DataError) as e:
        mnist.mnist_files("test")
    m = str(e.value)
    assert f"{server}/bad/t10k-images-idx3-ubyte.gz" in m
    assert "MD5 checksum mismatch" in m and mnist.MD5["t10k-images-idx3-ubyte.gz"] in m
    assert list(cache(tmp_path).iterdir()) == []  # neither the file nor a temp file remains


def test_corrupt_mirror_then_good_mirror(monkeypatch, tmp_path, server):
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{server}/bad/,{server}/good/")
    images, _ = mnist.mnist_files("test")
    assert images.read_bytes() == (MNIST / images.name).read_bytes()


def test_connection_dropped_mid_file(monkeypatch, tmp_path, server):
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{server}/short/")
    with pytest.raises(DataError) as e:
        mnist.mnist_files("test")
    m = str(e.value)
    url = f"{server}/short/t10k-images-idx3-ubyte.gz"
    # http.client reports the cut either as an error or as a short read; both are named
    assert f"{url}: truncated: got 10 of 1000 bytes" in m or f"{url}: connection broken after" in m
    assert list(cache(tmp_path).iterdir()) == []


def test_progress_bar_only_on_a_terminal(monkeypatch, tmp_path, server, capsys):
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{server}/good/")
    mnist.mnist_files("test")
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest
    for p in cache(tmp_path).iterdir():
        p.unlink()
    monkeypatch.setattr(mnist, "_stderr_is_tty", lambda: True)
    mnist.mnist_files("test")
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte.gz" in err and "1.65M" in err


def test_all_mirrors_down(monkeypatch, tmp_path, server):
    dead = f"http://127.0.0.1:{_closed_port()}/mnist/"
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", f"{dead},{server}/missing/")
    monkeypatch.setenv("FCSPEC_DATA", str(tmp_path / "mydata"))
    with pytest.raises(DataError) as e:
        data.load_source(ir.DataSource("mnist", {"split": "test"}), tmp_path)
    m = str(e.value)
    assert "could not download t10k-images-idx3-ubyte.gz" in m
    assert dead + "t10k-images-idx3-ubyte.gz: unreachable" in m
    assert f"{server}/missing/t10k-images-idx3-ubyte.gz: HTTP 404" in m
    assert (
        str(tmp_path / "mydata" / "mnist") in m and str(cache(tmp_path)) in m
    )  # where to put them


def test_unwritable_cache(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a folder must go
    with pytest.raises(DataError, match="cannot create the download folder"):
        mnist.mnist_files("test")


def test_mirror_list_and_folders(monkeypatch, tmp_path):
    monkeypatch.delenv("FCSPEC_MNIST_MIRRORS")
    assert mnist.mirrors() == list(mnist.DEFAULT_MIRRORS)
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", " http://a/x , http://b/y/ ,")
    assert mnist.mirrors() == ["http://a/x/", "http://b/y/"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.cache_dir() == tmp_path / "home" / ".cache" / "fcspec" / "mnist"
    assert mnist.search_dirs() == [mnist.cache_dir()]
    with pytest.raises(DataError, match="unknown split 'valid'"):
        mnist.mnist_files("valid")
