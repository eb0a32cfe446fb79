"""Product images: map local files to items, or download image URLs safely, with a resumable cache.

Downloads accept http(s) only (redirects too), bound the time and size of every response, retry
transient failures (timeouts, 5xx, broken connections) with exponential backoff, verify every body with
PIL, and report each failure by reason. Successful bodies are cached by URL hash, so a rerun resumes.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import socket
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


def _digest(item_id: str) -> str:
    return hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def safe_file_stem(item_id: str) -> str:
    """A file-name stem for an item id, one-to-one: an id of letters, digits, `_` and `.` (every Amazon
    asin) is its own stem; any other id becomes its sanitized text plus `-` and a digest of the raw id.
    Plain stems hold no `-`, so the two kinds never meet; no path separators, no dot-files."""
    if _PLAIN_ID.fullmatch(item_id):
        return item_id
    return f"{_UNSAFE.sub('_', item_id).lstrip('.')[:80]}-{_digest(item_id)}"


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


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _fetch_once(url: str, settings: DownloadSettings) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "unimp-bench/0.1 (image fetch)"})
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=settings.timeout_s) as response:
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
    except (ConnectionError, OSError) as exc:
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
        name = f"{_UNSAFE.sub('_', item_id)[:80]}-{_digest(item_id)}{suffix}"
        target = images_out / name
        if target.exists():
            raise UnimpError(f"two items share the image file name {name}; rename one of the ids")
    images_out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return f"images/{name}"
