"""Product images: map local files to items, or download image URLs safely, with a resumable cache.

Downloads accept http(s) only (redirects too), bound the time and size of every response, retry
transient failures (timeouts, 5xx, broken connections) with exponential backoff, verify every body with
PIL, and report each failure by reason. Successful bodies are cached by URL hash, so a rerun resumes.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from PIL import Image

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import write_bytes_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
_SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,79}")


def _hashed_stem(item_id: str) -> str:
    """An id's sanitized text plus `-` and a digest of the raw id: unique, whatever the id."""
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', item_id).lstrip('.')[:80]}-{digest}"


def safe_file_stem(item_id: str) -> str:
    """A file-name stem for an item id, one-to-one: an id of letters, digits, `_` and `.` (every Amazon
    asin) is its own stem; any other id becomes its sanitized text plus `-` and a digest of the raw id.
    Plain stems hold no `-`, so the two kinds never meet; no path separators, no dot-files."""
    return item_id if _PLAIN_ID.fullmatch(item_id) else _hashed_stem(item_id)


def verify_image(data: bytes) -> str:
    """The file suffix for a decodable image body; ValueError when PIL cannot fully decode it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image_format = image.format
    except Exception as exc:  # PIL raises many types for bad bodies
        raise ValueError(f"not a decodable image ({type(exc).__name__})") from None
    if image_format not in _SUFFIX_OF_FORMAT:
        raise ValueError(f"unsupported image format {image_format}")
    return _SUFFIX_OF_FORMAT[image_format]


def index_local_images(images_dir: Path) -> dict[str, Path]:
    """Image files under images_dir by file stem (the item id); the first in sorted order wins."""
    found: dict[str, Path] = {}
    for path in sorted(images_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


@dataclass(frozen=True)
class DownloadSettings:
    cache_dir: Path
    concurrency: int = 8
    timeout_s: float = 10.0  # per connection attempt and per read
    deadline_s: float = 30.0  # whole body of one attempt
    max_bytes: int = 10 << 20
    retries: int = 3
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UnimpError(f"--download-concurrency must be at least 1, got {self.concurrency}")
        for name, value in (("--download-timeout", self.timeout_s), ("download deadline", self.deadline_s)):
            if not (math.isfinite(value) and value > 0):
                raise UnimpError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_bytes < 1 or self.retries < 0 or self.backoff_s < 0:
            raise UnimpError("image download limits must be positive (max_bytes >= 1, retries >= 0)")


class DownloadError(Exception):
    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(("http://", "https://")):  # e.g. ftp://, which urllib would follow
            raise DownloadError("bad_redirect", retryable=False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Sockets:
    """The sockets one attempt opened (redirects open more), so that its deadline can cut them all:
    a server that trickles its headers or TLS handshake one byte at a time never trips the per-read
    timeout, only this."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.expired = False

    def add(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._open.append(sock)
            if self.expired:
                _cut(sock)
        return sock

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._open:
                _cut(sock)


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
    except OSError:
        pass


class _TrackedConnections:
    """Mixed into urllib's HTTP and HTTPS handlers: every connection they make reports its socket."""

    def __init__(self, sockets: _Sockets, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets = sockets

    def do_open(self, http_class, req, **kwargs):
        sockets = self.sockets

        class Tracked(http_class):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                create = self._create_connection
                self._create_connection = lambda *a, **k: sockets.add(create(*a, **k))

        return super().do_open(Tracked, req, **kwargs)


class _TrackedHTTP(_TrackedConnections, urllib.request.HTTPHandler):
    pass


class _TrackedHTTPS(_TrackedConnections, urllib.request.HTTPSHandler):
    pass


def _fetch_once(url: str, settings: DownloadSettings) -> bytes:
    """One attempt, bounded as a whole by settings.deadline_s (connect, TLS, headers and body) and each
    read by settings.timeout_s."""
    sockets = _Sockets()
    watchdog = threading.Timer(settings.deadline_s, sockets.expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        return _read_response(url, settings, sockets)
    except DownloadError:
        if sockets.expired:
            raise DownloadError("deadline_exceeded", retryable=True) from None
        raise
    finally:
        watchdog.cancel()


def _read_response(url: str, settings: DownloadSettings, sockets: _Sockets) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "unimp-bench/0.1 (image fetch)"})
    opener = urllib.request.build_opener(_HttpOnlyRedirects, _TrackedHTTP(sockets), _TrackedHTTPS(sockets))
    started = time.monotonic()
    try:
        with opener.open(request, timeout=settings.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                raise DownloadError("too_large", retryable=False)
            body = bytearray()
            while True:
                block = response.read1(64 << 10)  # one receive at most: the deadline is checked between them
                if not block:
                    break
                body += block
                if len(body) > settings.max_bytes:
                    raise DownloadError("too_large", retryable=False)
                if time.monotonic() - started > settings.deadline_s:
                    raise DownloadError("deadline_exceeded", retryable=True)
            if declared and declared.isdigit() and len(body) < int(declared):
                raise DownloadError("incomplete_body", retryable=True)
            return bytes(body)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # urllib refuses redirects to schemes other than http(s)/ftp
            raise DownloadError("bad_redirect", retryable=False) from None
        raise DownloadError(f"http_{exc.code}", retryable=exc.code >= 500 or exc.code == 429) from None
    except TimeoutError:
        raise DownloadError("timeout", retryable=True) from None
    except HTTPException as exc:  # IncompleteRead: the body ended before Content-Length
        raise DownloadError(f"broken_response:{type(exc).__name__}", retryable=True) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DownloadError("timeout", retryable=True) from None
        raise DownloadError(f"connection_error:{type(reason).__name__}", retryable=True) from None
    except (ConnectionError, OSError, ValueError) as exc:  # ssl errors are OSErrors
        raise DownloadError(f"connection_error:{type(exc).__name__}", retryable=True) from None


def cache_path(url: str, settings: DownloadSettings) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()
    return settings.cache_dir / digest[:2] / f"{digest}.img"


@dataclass(frozen=True)
class FetchOutcome:
    url: str
    path: Path | None  # cached, verified body
    suffix: str | None
    reason: str | None  # failure reason when path is None
    attempts: int
    from_cache: bool


def fetch_image(
    url: str, settings: DownloadSettings, sleep: Callable[[float], None] = time.sleep
) -> FetchOutcome:
    if not url.lower().startswith(("http://", "https://")):
        return FetchOutcome(url, None, None, "not_http_url", 0, False)
    cached = cache_path(url, settings)
    if cached.exists():
        try:
            return FetchOutcome(url, cached, verify_image(cached.read_bytes()), None, 0, True)
        except ValueError:
            cached.unlink(missing_ok=True)
    reason = "unknown"
    for attempt in range(1, settings.retries + 2):
        try:
            body = _fetch_once(url, settings)
            suffix = verify_image(body)
        except DownloadError as exc:
            reason = exc.reason
            if not exc.retryable or attempt > settings.retries:
                return FetchOutcome(url, None, None, reason, attempt, False)
            sleep(settings.backoff_s * 2 ** (attempt - 1))
            continue
        except ValueError:
            return FetchOutcome(url, None, None, "not_an_image", attempt, False)
        write_bytes_atomic(cached, body)
        return FetchOutcome(url, cached, suffix, None, attempt, False)
    return FetchOutcome(url, None, None, reason, settings.retries + 1, False)


def fetch_all(
    urls: list[str], settings: DownloadSettings, advance: Callable[[], None] | None = None
) -> dict[str, FetchOutcome]:
    """Fetch every distinct URL with at most `settings.concurrency` requests in flight."""
    distinct = sorted(set(urls))
    outcomes: dict[str, FetchOutcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        for outcome in pool.map(lambda u: fetch_image(u, settings), distinct):
            outcomes[outcome.url] = outcome
            if advance:
                advance()
    return outcomes


def place_image(source: Path, images_out: Path, item_id: str, suffix: str) -> str:
    """Copy an image into the dataset's images/ folder; returns its path relative to the dataset."""
    name = f"{safe_file_stem(item_id)}{suffix}"
    target = images_out / name
    if target.exists():  # another item's file: two ids that differ only in case, on a case-blind disk
        name = f"{_hashed_stem(item_id)}{suffix}"
        target = images_out / name
        if target.exists():
            raise UnimpError(f"two items share the image file name {name}; rename one of the ids")
    images_out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return f"images/{name}"
