"""Atomic writes: a file or a whole folder appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from unimp_bench.errors import UnimpError


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_parquet_atomic(frame, path: Path, **options) -> None:
    """A polars DataFrame as zstd Parquet (`options` go to write_parquet), written atomically."""
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", **options)
    write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path: Path, payload) -> None:
    write_bytes_atomic(
        path, (json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
    )


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_STAGING = re.compile(r"\.(?P<name>.+)\.(?:partial|previous)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of `out` left by runs that died (kill -9, power loss) on this host;
    those of live runs, and of other hosts sharing the folder, are left alone. Returns what went."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        match = _STAGING.fullmatch(path.name)
        if match and match["name"] == out.name and match["host"] == _HOST and not _alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _staging_name(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success it replaces `out`, on failure it is removed.
    Staging folders name their host and process, so a later run removes those of runs that died."""
    out = out.resolve()
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise UnimpError(f"output {out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = _staging_name(out, "partial")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = _staging_name(out, "previous")
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


def copy_directory_atomic(source: Path, out: Path) -> None:
    """Replace `out` with a copy of `source`; readers see the old or the new copy, never half of one."""
    with atomic_directory(out, overwrite=True) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


def read_json(path: Path, remedy: str, kind: type | None = dict):
    """The JSON document at `path` (an object unless `kind` says otherwise); a malformed one is a user
    error that says what to do."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError is a ValueError
        raise UnimpError(f"{path} is not valid JSON; {remedy}") from None
    if kind is not None and not isinstance(document, kind):
        raise UnimpError(f"{path} holds a JSON {type(document).__name__}, not an object; {remedy}")
    return document


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
