"""End-to-end calibration of a lookup table: how whole networks relate to their layer sums.

A network runs differently from its layers timed alone (graph overhead, memory traffic
between layers, weights streamed from beyond the cache), so measured network latency is fit
against features of the network: the per-layer sums by op group and the deployed weights.
`fit_calibration` chooses among a few fits by leave-one-out error, and with enough networks
tries per-op corrections on top; `apply_calibration` applies the chosen one. The fit is stored
in the table (`LatencyTable.calibrations`).
"""
from __future__ import annotations

import math

from ..nn.config import ChannelConfig
from ..nn.supernet import Supernet
from .signatures import OP_GROUPS

def weights_mb(supernet: Supernet, config: ChannelConfig, mem=None) -> float:
    """float32 weights of the config as deployed (BN folded), in MB (`mem`: its memory_counts,
    when already counted)."""
    from ..counting import memory_counts

    return (mem or memory_counts(supernet, config)).folded_param_bytes / 1e6


def apply_calibration(cal: dict, features: dict[str, float]) -> float:
    """Calibrated latency from per-group layer sums (and the weights in MB, for fits that use
    them). A fit with "coef" weighs its terms separately: alone, each kind of op runs at its own
    distance from its speed inside a network (data layout, cache reuse between layers), and a
    network whose weights outgrow the cache streams them from memory on every run, which a
    single op timed in a loop never does. Older tables and imported phone tables may carry only
    one slope for the whole sum."""
    if "knee_mb" in cal:
        features = {**features, OVER_KNEE: max(0.0, features.get("weights_mb", 0.0) - cal["knee_mb"])}
    if "coef" in cal:
        out = sum(c * features.get(term, 0.0) for term, c in cal["coef"].items()) + cal["coef_intercept"]
        if "op_delta" in cal:
            ops = features.get("ops")
            if ops is None or len(ops) != len(cal["op_delta"]):
                raise ValueError(f"this calibration weighs {len(cal['op_delta'])} ops one by one; the network "
                                 f"has {'no per-op latencies' if ops is None else len(ops)}")
            out += sum(d * ms for d, ms in zip(cal["op_delta"], ops))
        return out
    return cal["slope"] * sum(features.get(g, 0.0) for g in OP_GROUPS) + cal["intercept"]


class CalibrationSkipped(Exception):
    """The calibration networks cannot give a usable fit; predictions stay layer sums."""


# The fits a calibration chooses from: terms (each a sum of features sharing one weight).
_MODELS = {
    "groups": [("conv",), ("dwconv",), ("other",)],
    "sum+weights": [OP_GROUPS, ("weights_mb",)],
    "groups+weights": [("conv",), ("dwconv",), ("other",), ("weights_mb",)],
}


# The share of leave-one-out error each weight beyond the one slope must remove to be kept.
EXTRA_WEIGHT_COST = 0.05


def fit_calibration(features: list[dict[str, float]], measured: list[float]) -> dict:
    """measured ~ slope * layer sum + intercept, always (and for display); then, with enough
    networks, the richer fits of _MODELS (per op group, plus the weights when the features have
    them). Each is scored by how well it predicts networks left out of it (leave-one-out MAPE),
    and each weight beyond the one slope must earn its keep: a fit with k extra weights scores
    its MAPE / (1 - k * EXTRA_WEIGHT_COST); the lowest score wins, provided its weights are not
    negative. Extra weights fit noise readily, so each pays; the weights term, one extra weight,
    is what a network streaming its weights from beyond the cache costs (benchmarks/NOTES.md,
    benchmarks/calibration_fit.py). With 9 networks or more, the layer sum plus the weights beyond
    a knee (the cache's share for weights, searched: `_knee_fit`) competes too, scored by nested
    leave-one-out; it records `knee_mb`.
    Raises CalibrationSkipped when no increasing line fits: a flat or falling one would rank
    sub-networks alike or backwards."""
    import numpy as np
    from scipy.stats import linregress

    totals = [sum(f.get(g, 0.0) for g in OP_GROUPS) for f in features]
    if len(measured) < 2:
        raise CalibrationSkipped(f"{len(measured)} calibration network(s) measured; predictions are layer sums")
    if np.ptp(totals) <= 0:
        raise CalibrationSkipped("the calibration networks have equal layer sums; predictions are layer sums")
    fit = linregress(totals, measured)
    if not (fit.slope > 0 and math.isfinite(fit.rvalue)):
        raise CalibrationSkipped(f"the fit on {len(measured)} networks is not increasing (slope {fit.slope:.3g}); "
                                 "predictions are layer sums")
    out = {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2),
           "samples": len(measured)}
    y = np.array(measured)
    if len(measured) >= 6:
        out["loo_mape"] = _loo_mape(np.array([[t, 1.0] for t in totals]), y)
    best = None
    for name, terms in _MODELS.items():
        if len(measured) < 3 * (len(terms) + 1) or any(t not in features[0] for group in terms for t in group):
            continue
        x = design_matrix(features, terms)
        if np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (coef[:-1] < 0).any() or not (coef[0] > 0):
            continue
        loo = _loo_mape(x, y)
        score = loo / (1 - (len(terms) - 1) * EXTRA_WEIGHT_COST)
        if score < out["loo_mape"] and (best is None or score < best[0]):
            best = (score, loo, name, terms, coef, x)
    knee = _knee_fit(features, y) if len(measured) >= 9 and "weights_mb" in features[0] else None
    if knee is not None:
        loo, k, coef, x = knee
        score = loo / (1 - EXTRA_WEIGHT_COST)  # one weight; choosing the knee is paid inside `loo`
        if score < out["loo_mape"] and (best is None or score < best[0]):
            best = (score, loo, "sum+weights beyond a knee", KNEE_TERMS, coef, x)
            out["knee_mb"] = k
    if best is not None:
        _, loo, name, terms, coef, x = best
        resid = y - x @ coef
        out.update(fit=name, coef={t: float(c) for group, c in zip(terms, coef) for t in group},
                   coef_intercept=float(coef[-1]), coef_loo_mape=loo,
                   coef_r2=float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()))
    if len(measured) >= PER_OP_MIN_NETWORKS and "ops" in features[0]:
        _add_per_op(out, best, features, totals, y)
    return out


# Per-op corrections: with this many calibration networks or more, the chosen fit is tried again
# with one more weight per op of the network (its position in the graph), each pulled toward 0 by
# a ridge penalty. An op timed alone in a loop is off from what it costs inside the network by
# its own amount (how its layout meets its neighbours', which adds ORT fuses into it, what its
# input left in the cache); the shared slope averages those over the whole network, and for
# small networks of a few microseconds per op they do not average out (benchmarks/NOTES.md,
# "Session of 2026-12-07: per-op corrections"). Adopted only when its nested leave-one-out error (the
# penalty chosen without the network left out) beats the chosen fit's by PER_OP_GAIN.
PER_OP_MIN_NETWORKS = 40
PER_OP_GAIN = 0.9
# the ridge penalty, x the typical energy of an op's column (networks x mean square op latency)
PER_OP_PENALTIES = tuple(10.0 ** (k / 2) for k in range(-4, 5))


def _ridge_loo(x, y, pen):
    """Exact leave-one-out residuals of the ridge fit (x'x + diag(pen)) c = x'y, and c."""
    import numpy as np

    a = np.linalg.pinv(x.T @ x + np.diag(pen))
    coef = a @ x.T @ y
    hat = np.einsum("ij,jk,ik->i", x, a, x)
    if hat.max() > 1 - 1e-9:
        return None, coef
    return (y - x @ coef) / (1 - hat), coef


def _best_penalty(x, y, pen_unit):
    """(leave-one-out MAPE, penalty scale, coef) of the best penalty on the grid."""
    import numpy as np

    best = None
    for lam in PER_OP_PENALTIES:
        resid, coef = _ridge_loo(x, y, lam * pen_unit)
        if resid is None:
            continue
        loo = float(np.mean(np.abs(resid) / y) * 100)
        if best is None or loo < best[0]:
            best = (loo, lam, coef)
    return best


def _add_per_op(out: dict, best, features: list[dict], totals: list[float], y) -> None:
    """Extend `out` (fit_calibration's result) with per-op corrections when they pay."""
    import numpy as np

    ops = np.array([f["ops"] for f in features], dtype=float)
    if ops.ndim != 2 or ops.shape[1] == 0:
        return
    if best is not None:
        _, base_loo, name, terms, _, base = best
    else:
        base_loo, name, terms = out["loo_mape"], "one slope", [OP_GROUPS]
        base = np.array([[t, 1.0] for t in totals])
    x = np.hstack([base[:, :-1], ops, base[:, -1:]])
    k = base.shape[1] - 1
    pen_unit = np.r_[np.zeros(k), np.full(ops.shape[1], float(np.mean(ops ** 2)) * len(y)), 0.0]
    chosen = _best_penalty(x, y, pen_unit)
    if chosen is None:
        return
    errors = []  # nested: each network predicted by the penalty chosen without it
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        inner = _best_penalty(x[keep], y[keep], pen_unit)
        if inner is None:
            return
        errors.append(abs(x[i] @ inner[2] - y[i]) / y[i])
    loo = float(np.mean(errors) * 100)
    if loo >= PER_OP_GAIN * base_loo:
        out["per_op_loo_mape"] = loo  # tried, not adopted
        return
    _, lam, coef = chosen
    resid = y - x @ coef
    out.update(fit=f"{name} + per-op corrections", coef={t: float(c) for group, c in zip(terms, coef[:k]) for t in group},
               coef_intercept=float(coef[-1]), op_delta=[float(c) for c in coef[k:-1]], op_penalty=lam,
               coef_loo_mape=loo, coef_r2=float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()))


# A network whose weights fit in the core's cache re-reads them from there on every run; beyond
# that, each further MB streams from farther out, and a straight weights term cannot bend there
# (benchmarks/NOTES.md, "Calibration: weights beyond a knee"). The knee is searched on this
# grid, 0.125 to 16 MB, in steps of 2^(1/4).
OVER_KNEE = "weights_over_knee_mb"
KNEE_TERMS = [OP_GROUPS, (OVER_KNEE,)]
KNEE_GRID_MB = tuple(0.125 * 2 ** (i / 4) for i in range(29))


def _knee_rows(features: list[dict[str, float]], knee: float):
    import numpy as np

    return np.array([[sum(f[g] for g in OP_GROUPS), max(0.0, f["weights_mb"] - knee), 1.0] for f in features])


def _loo_residuals(x, y):
    """Leave-one-out residuals of a least-squares fit, exactly, from one fit (r_i / (1 - h_ii));
    None when a network alone fixes a weight (leverage 1: left out, nothing predicts it)."""
    import numpy as np

    pinv = np.linalg.pinv(x)
    hat = np.einsum("ij,ji->i", x, pinv)
    if hat.max() > 1 - 1e-9:
        return None
    return (y - x @ (pinv @ y)) / (1 - hat)


def _best_knee(features: list[dict[str, float]], y):
    """(leave-one-out MAPE, knee, coef, rows) of the best knee strictly inside the networks' weights
    (elsewhere the term is zero for all of them, or a plain weights term), both weights positive."""
    import numpy as np

    w = [f["weights_mb"] for f in features]
    best = None
    for k in KNEE_GRID_MB:
        if not min(w) < k < max(w):
            continue
        x = _knee_rows(features, k)
        if np.linalg.matrix_rank(x) < 3:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (coef[:2] <= 0).any():
            continue
        resid = _loo_residuals(x, y)
        if resid is None:
            continue
        loo = float(np.mean(np.abs(resid) / y) * 100)
        if best is None or loo < best[0]:
            best = (loo, k, coef, x)
    return best


def _knee_fit(features: list[dict[str, float]], y):
    """The knee fit, scored honestly: each network left out is predicted by the fit whose knee was
    chosen without it (nested leave-one-out), so the search over knees does not flatter it.
    None when no knee fits."""
    import numpy as np

    best = _best_knee(features, y)
    if best is None:
        return None
    errors = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        inner = _best_knee([features[j] for j in keep], y[keep])
        if inner is None:
            return None
        errors.append(abs(_knee_rows([features[i]], inner[1])[0] @ inner[2] - y[i]) / y[i])
    _, k, coef, x = best
    return float(np.mean(errors) * 100), k, coef, x


def design_matrix(features: list[dict[str, float]], terms: list[tuple[str, ...]]):
    """One row per network: each term's features summed (they share one weight), then 1 (the intercept)."""
    import numpy as np

    return np.array([[sum(f[t] for t in group) for group in terms] + [1.0] for f in features])


def _loo_mape(x, y) -> float:
    """Mean absolute percentage error of a least-squares fit on each point left out of it."""
    import numpy as np

    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        errors.append(abs(x[i] @ c - y[i]) / y[i])
    return float(np.mean(errors) * 100)
