"""Which checkpoint files may be unpickled: only those this user's unimp-bench wrote, unchanged since.

DeepSpeed resumes with `torch.load(weights_only=False)`, which runs any code a `.pt` file carries, and
run folders travel between people. So every checkpoint folder gets a manifest (`checksums.json`): the
sha256 of each of its files, signed with HMAC-SHA256 under a key kept outside every run folder
(`$UNIMP_BENCH_CONFIG`, default `$XDG_CONFIG_HOME/unimp-bench` or `~/.config/unimp-bench`,
`checkpoint.key`, created on first use, readable by its owner only). `--resume` loads a checkpoint only
when every file in it is listed with a matching digest and the signature is this key's; a planted,
swapped, corrupt or unlisted file, or a folder written elsewhere, is refused in one sentence before
DeepSpeed opens anything. The rest of a run folder is read without unpickling (JSON, YAML with
safe_load, safetensors, tokenizer JSON), so it needs no signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from unimp_bench.errors import UnimpError
from unimp_bench.fileio import file_sha256, write_bytes_atomic

MANIFEST = "checksums.json"
KEY_FILE = "checkpoint.key"


def config_dir() -> Path:
    if "UNIMP_BENCH_CONFIG" in os.environ:
        return Path(os.environ["UNIMP_BENCH_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "unimp-bench"


def signing_key() -> bytes:
    """This user's checkpoint key, created (owner-only, never replaced) on first use."""
    path = config_dir() / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(32).hex().encode())
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise UnimpError(
            f"the checkpoint key {path} is damaged; remove it (checkpoints it signed will no longer resume)"
        )
    return key


def _signature(files: dict[str, str], key: bytes) -> str:
    body = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _files_of(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (relative POSIX paths), the manifest itself left out."""
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    }


def sign_checkpoint(folder: Path) -> None:
    """Write the signed manifest of every file now in `folder` (after all of them were written)."""
    files = _files_of(folder)
    manifest = {"algorithm": "sha256", "files": files, "hmac_sha256": _signature(files, signing_key())}
    write_bytes_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def is_signed(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def verify_checkpoint(folder: Path) -> None:
    """Raise UnimpError unless `folder` is exactly what this user's unimp-bench wrote and signed."""
    refuse = f"refusing to resume from {folder}: "
    why = " (loading it would unpickle files that can run code)"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files, signature = manifest["files"], manifest["hmac_sha256"]
        if not isinstance(files, dict) or not isinstance(signature, str):
            raise TypeError
    except FileNotFoundError:
        raise UnimpError(refuse + f"it has no {MANIFEST}, so unimp-bench did not write it" + why) from None
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise UnimpError(refuse + f"its {MANIFEST} is malformed" + why) from None
    if not hmac.compare_digest(signature, _signature(files, signing_key())):
        raise UnimpError(
            refuse + f"its {MANIFEST} was not signed with this user's key ({config_dir() / KEY_FILE}): "
            "it was written elsewhere or edited" + why
        )
    present = _files_of(folder)
    unlisted = sorted(set(present) - set(files))
    missing = sorted(set(files) - set(present))
    changed = sorted(name for name in set(files) & set(present) if present[name] != files[name])
    for problem, names in (
        ("holds files it was not saved with", unlisted),
        ("lacks files", missing),
        ("holds files changed since it was saved", changed),
    ):
        if names:
            raise UnimpError(refuse + f"it {problem}: {', '.join(names[:3])}" + why)
