"""Training a supernet, or retraining one searched subnet from scratch (`--arch`)."""
from __future__ import annotations

from pathlib import Path

from .._io import read_text
from ..errors import UserError
from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from ..search.result import load_result, search_target_config
from ..train import TrainSettings, train


def read_arch(path: str, supernet: Supernet) -> ChannelConfig:
    """A channel config JSON, or `SEARCH.json:N`: target N of an `autoslim-hw search` result."""
    target = None
    if not Path(path).is_file() and ":" in path and path.rsplit(":", 1)[1].isdigit():
        path, target = path.rsplit(":", 1)[0], int(path.rsplit(":", 1)[1])
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--arch {path} does not exist; pass a channel config JSON, or SEARCH.json:N for "
                        "target N of an `autoslim-hw search` result")
    text = read_text(p, "--arch")
    if '"autoslim-hw/search"' in text:
        targets = load_result(p)["targets"]
        met = [i for i, t in enumerate(targets) if t.get("met")]
        if target is None:
            if len(targets) != 1:
                raise UserError(f"--arch {path} holds {len(targets)} targets; pick one as {path}:N "
                                f"(met: {', '.join(map(str, met)) or 'none'})")
            target = 0
        if target not in met:
            raise UserError(f"--arch {path}:{target}: no such met target (met: {', '.join(map(str, met)) or 'none'})")
        return search_target_config(targets[target], supernet.space, f"--arch {path}:{target}")
    return ChannelConfig.from_json(text, supernet.space, strict=False, source=f"--arch {path}")


def run_training(settings: TrainSettings, out: str | Path, resume: bool = False, progress: bool = True,
                 stop_after_steps: int | None = None) -> dict:
    """Train into `out` (`autoslim-hw train`): a supernet, or with `settings.arch` (a channel
    config JSON or SEARCH.json:N) that subnet from scratch. Returns the last epoch's metrics."""
    arch = None
    if settings.arch is not None:
        arch = lambda supernet: read_arch(settings.arch, supernet)  # noqa: E731  (needs the built supernet)
    return train(settings, out, resume=resume, progress=progress, stop_after_steps=stop_after_steps, arch=arch)
