"""`autoslim-hw eval` as a library call: accuracy and costs of one config of a checkpoint."""
from __future__ import annotations

from pathlib import Path

from ..counting import count
from ..data import make_loader
from ..errors import UserError
from ..nn.batchnorm import recalibrate_bn
from ..nn.evaluate import evaluate, topk_for
from .common import calibration_loader, checkpoint_splits, config_from_options, open_checkpoint


def evaluate_checkpoint(checkpoint: Path, width: float | None = None, channels: Path | None = None,
                        layers: str | None = None, data: str | None = None, data_dir: str | None = None,
                        calib_batches: int = 20) -> dict:
    """Top-1 (and top-5) on the validation split after BN recalibration on `calib_batches`
    training batches, with MACs, params and memory. A supernet at a config (--width, each unit
    snapped to its nearest trained width option; --channels or --layers; default 1.0x), or a
    retrained subnet at its own widths."""
    if calib_batches < 0:
        raise UserError(f"--calib-batches must be >= 0, got {calib_batches}")
    loaded = open_checkpoint(checkpoint)
    supernet, model = loaded.supernet, loaded.model
    if loaded.config is not None:  # a retrained subnet: its widths are fixed
        if any(x is not None for x in (width, channels, layers)):
            raise UserError(f"{checkpoint} holds a retrained subnet with fixed widths; drop --width/--channels/--layers")
        config = loaded.config
    else:
        config = config_from_options(supernet, width, channels, layers, snap=True)
    splits = checkpoint_splits(loaded.settings, supernet, data=data, data_dir=data_dir)
    if model is supernet:
        supernet.set_config(config)
    recalibrate_bn(model, None, calibration_loader(splits, seed=0), calib_batches)
    result = evaluate(model, make_loader(splits.val, 256, shuffle=False), topk=topk_for(supernet.spec.num_classes))
    counts = count(supernet, config)
    return {**{k: round(v, 3) for k, v in result.items()}, "macs": counts.macs, "params": counts.params,
            "memory": counts.memory}


def width_profile(checkpoint: Path, n_random: int = 10, calib_batches: int = 20, seed: int = 0,
                  data_dir: str | None = None, progress=None) -> dict:
    """Is every width of a supernet trained? Top-1 after BN recalibration of every uniform width
    on the search grid (0.15x to 1.5x) and of `n_random` random configs of each kind: around a
    random overall width (as training draws them and the search walks) and per unit (each unit
    independently, the hardest). A good supernet's accuracy rises with width, give or take one
    score's standard error; `largest_fall` is the largest drop of accuracy as width grows (the
    best narrower uniform width minus this one)."""
    import math
    import random

    from ..nn.evaluate import evaluate_config

    if n_random < 0 or calib_batches < 1:
        raise UserError("--random must be >= 0 and --calib-batches >= 1")
    loaded = open_checkpoint(checkpoint)
    net = loaded.supernet
    if loaded.config is not None:
        raise UserError(f"{checkpoint} holds a retrained subnet: it has one width; profile a supernet")
    splits = checkpoint_splits(loaded.settings, net, data_dir=data_dir)
    calib, val = calibration_loader(splits, seed=0), make_loader(splits.val, 256, shuffle=False)
    rng = random.Random(seed)
    jobs = [("uniform", f"{w:.2f}x", cfg) for w, cfg in net.space.uniform_ladder(step=0.05)]
    jobs += [("around", f"around {i}", net.space.sample_around(rng)) for i in range(n_random)]
    jobs += [("per-unit", f"per-unit {i}", net.space.sample(rng)) for i in range(n_random)]
    rows = []
    for i, (kind, name, cfg) in enumerate(jobs):
        top1 = evaluate_config(net, cfg, calib, val, calib_batches)["top1"]
        rows.append({"kind": kind, "name": name, "macs": count(net, cfg).macs, "top1": top1})
        if progress:
            progress(i + 1, len(jobs))
    worst, best = 0.0, -1.0
    for r in (r for r in rows if r["kind"] == "uniform"):
        worst, best = max(worst, best - r["top1"]), max(best, r["top1"])
    p = min(max(best / 100, 0.0), 1.0)
    return {"checkpoint": str(checkpoint), "rows": rows, "largest_fall": worst, "val_images": len(splits.val),
            "score_se": 100 * math.sqrt(p * (1 - p) / max(1, len(splits.val)))}


def plot_width_profile(profile: dict, path: Path) -> None:
    """Top-1 against MACs: the uniform widths as a line, random configs as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("uniform", "o-"), ("around", "s"), ("per-unit", "^")):
        rows = sorted((r for r in profile["rows"] if r["kind"] == kind), key=lambda r: r["macs"])
        if rows:
            ax.plot([r["macs"] / 1e6 for r in rows], [r["top1"] for r in rows], style,
                    mfc=None if kind == "uniform" else "none", label=f"{kind} width" if kind == "uniform"
                    else f"random, {kind}")
    ax.set_xlabel("MMACs")
    ax.set_ylabel("top-1 (%), supernet weights, BN recalibrated")
    ax.set_title(Path(profile["checkpoint"]).parent.name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
