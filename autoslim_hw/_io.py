"""Files: atomic writes (nothing half-written survives a crash or Ctrl-C), and reading the
format-tagged JSON files the tool writes (lookup tables, search results, bundle manifests,
channel configs) with one error line instead of a traceback."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


def umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes files private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, data, indent: int | None = 1, sort_keys: bool = False) -> None:
    """JSON, gzip-compressed when the name ends in .gz (with a fixed mtime: same data, same bytes)."""
    raw = (json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n").encode()
    if Path(path).suffix == ".gz":
        raw = gzip.compress(raw, mtime=0)
    atomic_write_bytes(path, raw)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a file the user named as `what` (e.g. "channel config"): a binary or
    unreadable file is a UserError, not a traceback."""
    from .errors import UserError

    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text (JSON) file; pass the JSON file itself") from None
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_json(path: str | os.PathLike, what: str, missing_hint: str, gz: bool = False):
    """The JSON value of a file the user named as `what`. A missing, unreadable or malformed
    file is a UserError naming the file; `missing_hint` says how to get one. With `gz`, a
    gzip-compressed file is read too."""
    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        what_is = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"{what} {path} {what_is}; {missing_hint}")
    try:
        raw = path.read_bytes()
        if gz and raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:120]}" if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable {what} ({detail})") from None


def read_tagged(path: str | os.PathLike, fmt: str, what: str, missing_hint: str, versions: tuple = (),
                version_key: str = "version", gz: bool = False) -> dict:
    """A format-tagged JSON file: a dict whose "format" is `fmt` and, when `versions` is given,
    whose `version_key` is one of them. Anything else is one UserError line."""
    return check_tagged(read_json(path, what, missing_hint, gz=gz), path, fmt, what, missing_hint, versions,
                        version_key)


def check_tagged(data, path: str | os.PathLike, fmt: str, what: str, missing_hint: str, versions: tuple = (),
                 version_key: str = "version") -> dict:
    """`data`, read from `path`, when it is what `read_tagged` accepts; else its UserError line."""
    from .errors import UserError

    if not isinstance(data, dict) or data.get("format") != fmt:
        raise UserError(f"{path} is not an autoslim-hw {what} (no '{fmt}' format tag)")
    if versions and data.get(version_key) not in versions:
        readable = " and ".join(str(v) for v in versions)
        raise UserError(f"{path} is a {what} of {version_key.replace('_', ' ')} {data.get(version_key)}; this "
                        f"autoslim-hw reads {readable}: {missing_hint.rstrip('.')} again, or upgrade autoslim-hw")
    return data


def check_output(path: str | os.PathLike, kind: str, option: str = "--out") -> None:
    """Before any work: `path` can be written as a `kind` ("file" or "directory"). It must not
    be a directory where a file goes (or the reverse), and the nearest folder that exists on the
    way to it must be a writable directory. Anything else is one UserError line."""
    from .errors import UserError

    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UserError(f"{option} {path} is a directory; pass a file name, e.g. {path / 'out.json'}")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; pass a directory for the run")
    parent = path if kind == "directory" and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {option} {path}: {parent} is a file, not a directory; choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {option} {path}: {parent} is not writable (permission denied); "
                        f"choose another {option}")
