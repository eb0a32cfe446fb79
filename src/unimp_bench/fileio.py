"""Atomic writes: a file or a whole folder appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
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


def write_json_atomic(path: Path, payload) -> None:
    write_bytes_atomic(
        path, (json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
    )


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success it replaces `out`, on failure it is removed."""
    out = out.resolve()
    if out.exists() and not overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise UnimpError(f"output {out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = out.parent / f".{out.name}.previous-{uuid.uuid4().hex[:8]}"
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
