"""Image download against a local HTTP server on 127.0.0.1: good, missing, slow, truncated, not images."""

import http.server
import io
import threading
import time

import polars as pl
import pytest
from PIL import Image

from helpers import review, write_lines
from unimp_bench.data.api import prepare_amazon_dataset
from unimp_bench.data.images import DownloadSettings, fetch_image, safe_file_stem


def _png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code, body, content_type="image/png", length=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path.startswith("/good"):
            self._send(200, _png((len(path) * 20 % 255, 10, 10)))
        elif path == "/missing.png":
            self._send(404, b"not found", "text/plain")
        elif path == "/slow.png":
            time.sleep(1.5)
            self._send(200, GOOD)
        elif path == "/truncated.png":
            self._send(200, GOOD[:20], length=len(GOOD))  # promises more than it sends
        elif path == "/html.png":
            self._send(200, b"<html>no image here</html>", "text/html")
        elif path == "/corrupt.png":
            self._send(200, GOOD[:-30] + b"\0" * 30)
        elif path == "/flaky.png":
            if _Handler.hits[path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, GOOD)
        elif path == "/drip.png":  # each byte within the read timeout, the whole body past the deadline
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            try:
                for byte in GOOD[:12]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up, as it should
                pass
        elif path == "/drip-headers.png":  # the status line itself trickles in, one byte per 0.2 s
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        elif path == "/huge.png":
            self._send(200, b"\0" * 5000)
        elif path == "/to-file.png":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"", "text/plain")


class _QuietServer(http.server.ThreadingHTTPServer):
    block_on_close = False  # do not wait for handlers still sleeping after a client gave up

    def handle_error(self, request, client_address):  # a client that gave up breaks the pipe: expected
        pass


@pytest.fixture
def server():
    _Handler.hits = {}
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _settings(tmp_path, **overrides):
    values = dict(
        cache_dir=tmp_path / "cache", timeout_s=0.5, deadline_s=2.0, max_bytes=4000, retries=2, backoff_s=0.01
    )
    return DownloadSettings(**(values | overrides))


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/missing.png", "http_404"),
        ("/slow.png", "timeout"),
        ("/truncated.png", "incomplete_body"),
        ("/html.png", "not_an_image"),
        ("/corrupt.png", "not_an_image"),
        ("/huge.png", "too_large"),
        ("/to-file.png", "bad_redirect"),
        ("/drip.png", "deadline_exceeded"),
        ("/drip-headers.png", "deadline_exceeded"),  # the deadline covers the headers too
    ],
)
def test_each_failure_has_its_reason(server, tmp_path, path, reason):
    started = time.monotonic()
    outcome = fetch_image(server + path, _settings(tmp_path, deadline_s=0.7, retries=0), sleep=lambda s: None)
    assert outcome.path is None and outcome.reason == reason
    assert time.monotonic() - started < 2.0  # the drip would take 2.4 s: the deadline cuts it short


def test_retries_are_bounded_and_only_for_transient_failures(server, tmp_path):
    assert fetch_image(server + "/flaky.png", _settings(tmp_path), sleep=lambda s: None).attempts == 2
    fetch_image(server + "/missing.png", _settings(tmp_path), sleep=lambda s: None)
    assert _Handler.hits["/missing.png"] == 1  # a 404 is final
    waits = []
    fetch_image(server + "/slow.png", _settings(tmp_path), sleep=waits.append)
    assert _Handler.hits["/slow.png"] == 3 and waits == [0.01, 0.02]  # 1 + 2 retries, exponential backoff


def test_only_http_urls_are_fetched(tmp_path):
    outcome = fetch_image("file:///etc/passwd", _settings(tmp_path))
    assert outcome.reason == "not_http_url" and outcome.attempts == 0


def test_download_images_end_to_end_reports_failures_and_resumes(server, tmp_path):
    reviews = [review(f"u{u}", f"i{i}", 10 * i + u) for u in range(2) for i in range(4)]
    meta = [
        {"asin": "i0", "title": "a", "image": [server + "/good-0.png"]},
        {"asin": "i1", "title": "b", "imageURLHighRes": [server + "/missing.png"]},
        {"asin": "i2", "title": "c", "imageURL": [server + "/html.png"]},
        {"asin": "i3", "title": "d"},
    ]
    write_lines(tmp_path / "raw" / "Toys_5.json", reviews)
    write_lines(tmp_path / "raw" / "meta_Toys.json", meta)
    options = dict(k_core=1, download_images=True, image_cache=tmp_path / "cache", download_timeout=0.5)
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", **options)
    assert manifest["images"]["with_image"] == 1
    assert manifest["images"]["failed"] == {"http_404": 1, "not_an_image": 1, "no_image_url": 1}
    failures = (tmp_path / "data" / "image_failures.jsonl").read_text().splitlines()
    assert len(failures) == 3
    items = pl.read_parquet(tmp_path / "data" / "items.parquet").sort("asin")
    assert items["image_path"].to_list() == ["images/i0.png", None, None, None]
    assert (tmp_path / "data" / "images" / "i0.png").read_bytes() == _png(
        (len("/good-0.png") * 20 % 255, 10, 10)
    )

    again = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data2", **options)
    assert _Handler.hits["/good-0.png"] == 1  # served from the cache on the rerun
    assert again["images"]["from_cache"] == 1 and again["images"]["downloaded"] == 0


def test_file_names_from_item_ids_are_sanitized():
    assert safe_file_stem("B00ABC123") == "B00ABC123"
    for hostile in ("../../etc/passwd", ".hidden", "a/b", "x" * 300):
        stem = safe_file_stem(hostile)
        assert "/" not in stem and not stem.startswith(".") and len(stem) <= 97
    # one-to-one: an id that looks like another id's sanitized name gets its own name
    ids = ["a/b", "a_b", "a?b", "a_b-c14cddc0", safe_file_stem("a/b"), "x" * 300, "x" * 301, ".a", "_a"]
    assert len({safe_file_stem(i) for i in ids}) == len(ids)


def test_items_whose_ids_sanitize_alike_keep_their_own_pictures(tmp_path):
    ids = ["a/b", safe_file_stem("a/b"), "a_b"]
    reviews = [review(f"u{u}", item, 10 * n + u) for u in range(2) for n, item in enumerate(ids)]
    write_lines(tmp_path / "raw" / "Toys_5.json", reviews)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for n, item in enumerate(ids):
        (pictures / f"{safe_file_stem(item)}.png").write_bytes(_png((40 * n, 0, 0)))
    prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1, images_dir=pictures)
    items = pl.read_parquet(tmp_path / "data" / "items.parquet")
    for n, item in enumerate(ids):
        path = items.filter(pl.col("asin") == item)["image_path"].item()
        assert (tmp_path / "data" / path).read_bytes() == _png((40 * n, 0, 0)), item


def test_local_images_are_verified_and_copied(tmp_path):
    reviews = [review(f"u{u}", f"i{i}", 10 * i + u) for u in range(2) for i in range(3)]
    write_lines(tmp_path / "raw" / "Toys_5.json", reviews)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "i0.png").write_bytes(GOOD)
    (pictures / "i1.jpg").write_bytes(b"not a jpeg")
    manifest = prepare_amazon_dataset(tmp_path / "raw", tmp_path / "data", k_core=1, images_dir=pictures)
    assert manifest["images"]["failed"] == {"no_local_file": 1, "not_an_image": 1}
    assert (tmp_path / "data" / "images" / "i0.png").read_bytes() == GOOD
