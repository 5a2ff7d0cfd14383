"""Atomic file writes: nothing half-written survives a crash or Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


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
