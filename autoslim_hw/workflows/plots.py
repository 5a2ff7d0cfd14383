"""Figures people would rather look at than read: the search trajectory, channel counts per
layer, and a lookup table's predictions against measurements."""
from __future__ import annotations

from pathlib import Path

from .._io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    _pyplot().close(fig)
    return path


def trajectory_plot(result: dict, path: Path, extra_points: list[dict] | None = None) -> Path:
    """Accuracy against latency (MACs without a table) along the greedy pass; targets starred.
    extra_points: more configs to show, each {"label", "accuracy", "latency_ms", "macs"}."""
    plt = _pyplot()
    steps = result["trajectory"]
    kind = "latency_ms" if steps and steps[0].get("latency_ms") is not None else "macs"
    scale, label = (1.0, "predicted latency (ms)") if kind == "latency_ms" else (1e-6, "MMACs")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s[kind] * scale for s in steps], [s["accuracy"] for s in steps], "-", color="tab:blue", lw=1,
            marker=".", ms=3, label="greedy trajectory")
    for i, t in enumerate(result.get("targets", [])):
        if not t.get("met"):
            continue
        ax.plot(t[kind] * scale, t["accuracy"], "*", ms=13, color=f"C{i + 1}",
                label=f"target {i}: " + ", ".join(f"{k}<={v:g}" for k, v in t["constraints"].items()))
        if kind in t["constraints"]:
            ax.axvline(t["constraints"][kind] * scale, color=f"C{i + 1}", ls=":", lw=0.8)
    for p in extra_points or []:
        ax.plot(p[kind] * scale, p["accuracy"], "s", ms=6, mfc="none", color="gray")
        ax.annotate(p["label"], (p[kind] * scale, p["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel("search-split top-1 (%)")
    ax.set_title(f"greedy slimming: {result['model']['arch']} @ {result['model']['input_size']}px", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def channels_plot(layer_names: list[str], largest: list[int], configs: dict[str, list[int]], path: Path) -> Path:
    """Per-layer output channels of each selected config over the largest (the paper's figure)."""
    plt = _pyplot()
    n = max(len(configs), 1)
    fig, axes = plt.subplots(n, 1, figsize=(max(6, len(layer_names) * 0.22), 2.2 * n), squeeze=False)
    xs = range(len(layer_names))
    for ax, (title, widths) in zip(axes[:, 0], configs.items()):
        ax.bar(xs, largest, color="0.85", label="largest")
        ax.bar(xs, widths, color="tab:blue", label="selected")
        ax.set_ylabel("channels")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-0.6, len(layer_names) - 0.4)
    axes[-1, 0].set_xticks(list(xs))
    axes[-1, 0].set_xticklabels(layer_names, rotation=90, fontsize=6)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def search_plots(supernet, result: dict, out: Path) -> None:
    """Beside a search result `out` (x.json): x_trajectory.png, and x_channels.png for the met targets."""
    from ..nn.config import ChannelConfig

    out = Path(out)
    trajectory_plot(result, out.with_name(out.stem + "_trajectory.png"))
    met = [(i, t) for i, t in enumerate(result["targets"]) if t.get("met")]
    if met:
        space = supernet.space
        slots = [s for s in space.producer_layers if not space.units[s.out_unit].fixed]
        largest = space.widths(space.largest())
        configs = {}
        for i, t in met:
            w = space.widths(ChannelConfig(t["config"]))
            configs[f"target {i}: " + ", ".join(f"{k}<={v:g}" for k, v in t["constraints"].items())] = \
                [w[s.out_unit] for s in slots]
        channels_plot([s.name for s in slots], [largest[s.out_unit] for s in slots], configs,
                      out.with_name(out.stem + "_channels.png"))


def validation_scatter(result: dict, path: Path, title: str) -> Path:
    """Predicted against measured latency of a table's validation, with the y = x line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    m, p = result["measured_ms"], result["predicted_ms"]
    ax.scatter(m, p, s=12)
    lo, hi = min(m + p), max(m + p)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title}\nMAPE {result['mape']:.1f}%, tau {result['kendall_tau']:.2f}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def families_plot(points: list[tuple[str, float, float]], path: Path, title: str) -> Path:
    """Top-1 against measured latency, one marker and line per family of configs (search
    criterion or uniform width): (family, ms, top-1) points."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for family, marker in zip(dict.fromkeys(p[0] for p in points), "osD^v<>"):
        xs = sorted((ms, top1) for f, ms, top1 in points if f == family)
        ax.plot([x for x, _ in xs], [y for _, y in xs], marker=marker, label=family)
    ax.set_xlabel("measured latency, ms (one core, ONNX Runtime)")
    ax.set_ylabel("top-1 %")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
