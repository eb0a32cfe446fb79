"""Finding raw Amazon files, telling their release apart, and streaming them as chunks of whole lines.

Releases and file names (optionally gzip-compressed, `.gz`):
  2014  reviews_<Stem>_5.json / reviews_<Stem>.json   meta_<Stem>.json (Python-literal lines)
  2018  <Stem>_5.json / <Stem>.json                   meta_<Stem>.json (strict JSON lines)
  2023  <Stem>.jsonl                                  meta_<Stem>.jsonl
The 2014 and 2018 meta files share a name pattern; their first line tells them apart.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimp_bench.data.rejects import RejectLog
from unimp_bench.errors import UnimpError

try:  # Intel ISA-L inflates about four times faster than zlib; fall back where it is absent
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib

CHUNK_BYTES = 4 << 20
READ_BYTES = 256 << 10
SNIFF_BYTES = 1 << 20

# (role, release, pattern); the first match wins, so the more specific names come first.
_NAME_PATTERNS: list[tuple[str, str, re.Pattern[str]]] = [
    ("meta", "2023", re.compile(r"^meta_(?P<stem>.+)\.jsonl$")),
    ("reviews", "2023", re.compile(r"^(?P<stem>.+)\.jsonl$")),
    ("meta", "2014|2018", re.compile(r"^meta_(?P<stem>.+)\.json$")),
    ("reviews", "2014", re.compile(r"^reviews_(?P<stem>.+?)(?P<five>_5)?\.json$")),
    ("reviews", "2018", re.compile(r"^(?P<stem>.+?)(?P<five>_5)?\.json$")),
]


@dataclass(frozen=True)
class RawFile:
    path: Path
    role: str  # "reviews" | "meta"
    release: str  # "2014" | "2018" | "2023"
    stem: str  # domain name as written in the file name, e.g. "Clothing_Shoes_and_Jewelry"

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(".gz")


def _open_decompressor():
    return _zlib.decompressobj(16 + _zlib.MAX_WBITS)


class Unreadable(Exception):
    """A file named like a raw Amazon file whose content cannot be read; the message says why."""


def read_head(path: Path, limit: int = SNIFF_BYTES) -> bytes:
    """The first `limit` decompressed bytes of a file (a gzip stream that ends or breaks later is
    fine: pass 1 counts that); Unreadable when the gzip stream is broken from its start."""
    with open(path, "rb") as handle:
        if not path.name.endswith(".gz"):
            return handle.read(limit)
        inflater = _open_decompressor()
        out = b""
        while len(out) < limit:
            block = handle.read(READ_BYTES)
            if not block:
                break
            try:
                out += inflater.decompress(block, limit - len(out))
            except _zlib.error as exc:
                if out:
                    break
                raise Unreadable(f"it is not a readable gzip stream ({exc})") from None
            while inflater.unconsumed_tail and len(out) < limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit - len(out))
        return out


SNIFF_LINES = 20
SNIFF_MAX_BYTES = 256 << 20  # a first line longer than this is not an Amazon record


def _first_records(path: Path) -> list[str]:
    """Up to SNIFF_LINES non-blank lines from the start of the file (the last one may be cut). The
    sniffed prefix grows until it holds a whole first line, however long."""
    if path.stat().st_size == 0:
        raise Unreadable("it is empty")
    limit = SNIFF_BYTES
    while True:
        head = read_head(path, limit)
        if not head.strip():
            raise Unreadable("it holds no data" if not head else "it holds only blank space")
        if b"\n" in head.lstrip() or len(head) < limit or limit >= SNIFF_MAX_BYTES:
            break
        limit *= 4
    lines = [line.decode("utf-8", errors="replace").strip() for line in head.split(b"\n")]
    return [line for line in lines if line][:SNIFF_LINES]


def classify(path: Path) -> RawFile | None:
    """The role and release of a raw file, from its name and first lines; None if it is not one
    (another JSON file); Unreadable if its content cannot be read at all.

    A few damaged lines at the start do not hide a file: the first line that parses decides.
    """
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    match = next(((role, release, m) for role, release, p in _NAME_PATTERNS if (m := p.match(name))), None)
    if match is None:
        return None
    role, release, found = match
    records = _first_records(path)
    for first in records:
        if release == "2014|2018":
            if first.startswith("{'"):
                return RawFile(path, role, "2014", found["stem"])
            if first.startswith('{"'):
                return RawFile(path, role, "2018", found["stem"])
            continue
        try:
            record = json.loads(first)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        if role == "reviews" and "reviewerID" not in record and "user_id" not in record:
            return None
        if role == "reviews" and release == "2018" and "user_id" in record:
            release = "2023"
        return RawFile(path, role, release, found["stem"])
    if _one_json_document(path):
        return None  # JSON of another shape (a pretty-printed document), not an Amazon dump
    raise Unreadable(f"none of its first {len(records)} line(s) is a JSON record")


def _one_json_document(path: Path) -> bool:
    """Whether a small file is one JSON document spread over several lines (package.json, ...)."""
    head = read_head(path, SNIFF_BYTES + 1)
    if len(head) > SNIFF_BYTES:
        return False
    try:
        json.loads(head)
    except (ValueError, RecursionError):
        return False
    return True


def discover(raw_dir: Path) -> tuple[list[RawFile], list[str], dict[str, str]]:
    """Every recognizable raw file under raw_dir (recursively), the names of the files ignored (other
    JSON), and the files named like raw files whose content cannot be read, with the reason."""
    if not raw_dir.exists():
        raise UnimpError(f"raw folder {raw_dir} does not exist")
    if not raw_dir.is_dir():
        raise UnimpError(f"{raw_dir} is not a folder; pass the folder that holds the raw Amazon files")
    found, ignored, unreadable = [], [], {}
    for path in sorted(p for p in raw_dir.rglob("*") if p.is_file()):
        name = path.name
        if name.startswith(".") or not name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            continue
        try:
            raw = classify(path)
        except Unreadable as exc:
            unreadable[str(path.relative_to(raw_dir))] = str(exc)
            continue
        if raw is None:
            ignored.append(str(path.relative_to(raw_dir)))
        else:
            found.append(raw)
    return found, ignored, unreadable


@dataclass
class StreamInfo:
    """What was seen while streaming one file: its checksum, size and line count, and damage."""

    sha256: str = ""
    bytes: int = 0
    lines: int = 0
    truncated: bool = False
    partial_tail: bytes = b""
    on_bytes: Callable[[int], None] | None = None  # told the stored bytes read so far, chunk by chunk

    @property
    def all_lines(self) -> int:
        """Whole lines plus the partial last line of a truncated stream."""
        return self.lines + (1 if self.partial_tail else 0)

    def record_damage(self, rejects: RejectLog, file_name: str) -> None:
        """Count a stream that ended early, and its partial last line, once the file was read."""
        if self.truncated:
            rejects.add("truncated_gzip_stream", file_name, self.lines + 1, "the gzip stream ends early")
            if self.partial_tail:
                rejects.add(
                    "truncated_final_line", file_name, self.lines + 1, f"{len(self.partial_tail)} bytes"
                )


def count_lines(span: bytes) -> int:
    """Lines in a span of whole lines (the last one may lack its newline)."""
    newlines = int(np.count_nonzero(np.frombuffer(span, dtype=np.uint8) == 10))  # 4x bytes.count
    return newlines + (0 if span.endswith(b"\n") else 1)


def iter_line_chunks(
    path: Path, info: StreamInfo, chunk_bytes: int = CHUNK_BYTES, checksum: bool = True
) -> Iterator[tuple[int, bytes]]:
    """Yield (first_line_number, chunk) where each chunk holds whole lines only (1-based numbering).

    Reading and inflating run in a background thread (they release the GIL), one or two chunks ahead
    of the caller's parsing.
    """
    handoff: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    finished = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in _line_chunks(path, info, chunk_bytes, checksum):
                put(item)
                if stop.is_set():
                    return
            put(finished)
        except BaseException as exc:  # handed to the caller's thread
            put(exc)

    producer = threading.Thread(target=produce, name=f"read {path.name}", daemon=True)
    producer.start()
    try:
        while True:
            item = handoff.get()
            if item is finished:
                if info.on_bytes:
                    info.on_bytes(info.bytes)
                return
            if isinstance(item, BaseException):
                raise item
            if info.on_bytes:
                info.on_bytes(info.bytes)
            yield item
    finally:
        stop.set()
        producer.join()


def _line_chunks(
    path: Path, info: StreamInfo, chunk_bytes: int, checksum: bool
) -> Iterator[tuple[int, bytes]]:
    """The body of iter_line_chunks, run in its reader thread.

    A gzip stream that ends early (`truncated`) leaves its final partial line in `info.partial_tail`;
    a plain file's last line without a newline is a whole line. Concatenated gzip members are read in
    turn. The sha256 covers the file's bytes as stored. Each decompressed byte is copied about twice.
    """
    digest = hashlib.sha256()
    inflater = _open_decompressor() if path.name.endswith(".gz") else None
    pieces: list[bytes] = []  # decompressed bytes not yet yielded; only the last may lack a newline
    pending = 0
    next_line = 1

    def emit(chunk: bytes) -> tuple[int, bytes]:
        nonlocal next_line
        count = count_lines(chunk)
        info.lines += count
        first, next_line = next_line, next_line + count
        return first, chunk

    with open(path, "rb") as handle:
        while block := handle.read(READ_BYTES):
            if checksum:
                digest.update(block)
            info.bytes += len(block)
            data = block
            if inflater is not None:
                data = b""
                if not info.truncated:
                    try:
                        data = inflater.decompress(block)
                        while inflater.eof and inflater.unused_data:  # next gzip member
                            rest = inflater.unused_data
                            inflater = _open_decompressor()
                            data += inflater.decompress(rest)
                    except _zlib.error:  # corrupt data: keep what came before, like a truncation
                        info.truncated = True
            if not data:
                continue
            pieces.append(data)
            pending += len(data)
            if pending >= chunk_bytes:
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield emit(b"".join([*pieces[:-1], data[:cut]]))
                    pieces = [data[cut:]] if cut < len(data) else []
                    pending = len(data) - cut
    if inflater is not None and not inflater.eof:
        info.truncated = True
    tail = b"".join(pieces)
    if tail:
        cut = tail.rfind(b"\n") + 1
        if info.truncated:
            info.partial_tail = tail[cut:]
            tail = tail[:cut]
        if tail:
            yield emit(tail)
    info.sha256 = digest.hexdigest() if checksum else ""


def line_offsets(chunk: bytes) -> np.ndarray:
    """Start offset of every line of a chunk, plus the chunk's length as a final sentinel."""
    newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
    starts = np.concatenate([[0], newlines + 1])
    if chunk.endswith(b"\n"):
        return starts
    return np.concatenate([starts, [len(chunk) + 1]])


def iter_selected_lines(
    path: Path, wanted: np.ndarray, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """Per chunk, the wanted (sorted, 1-based) line numbers that fall in it and those lines' bytes.

    Stops reading as soon as the last wanted line has been seen.
    """
    position = 0
    for first_line, chunk in iter_line_chunks(path, StreamInfo(on_bytes=on_bytes), checksum=False):
        if position >= len(wanted):
            break
        starts = line_offsets(chunk)
        stop = int(np.searchsorted(wanted, first_line + len(starts) - 1, side="left"))
        if stop == position:
            continue
        picked = wanted[position:stop]
        index = picked - first_line
        ends = starts[index + 1] - 1
        yield picked, [chunk[a:b] for a, b in zip(starts[index].tolist(), ends.tolist())]
        position = stop
    if on_bytes:
        on_bytes(path.stat().st_size)  # the rest of the file needs no reading


def split_lines(chunk: bytes) -> list[bytes]:
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    return lines
