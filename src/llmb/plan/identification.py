"""Which rows identify which fitted parameter: a measured answer to "is any parameter informed
by one workload only?".

At the fitted parameters, the rows' log step times are linearised in the parameters (central
differences, in the fit's own coordinates: log for fractions, knees and latencies, linear for
the overlap and the knee exponent). Their weighted Fisher information (each published table
weighs one, as in the fit's loss) gives each parameter's *conditional* information: what the
rows say about it once the other parameters are free to absorb what they can (the Schur
complement of the rest). Leaving one group of rows out (a workload) and recomputing says how
much of that information the group carried: 0 when the rest of the catalog pins the parameter
as well without it, 1 when nothing else does (the parameter would be unidentified without
that workload, its value set by the prior alone). The prior is left out on purpose: it is what
a parameter falls back on, not evidence.

This is local (the model is linear near the fit only) and says nothing about bias: a
parameter can be well identified and still wrong, which the cross-validation measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from llmb.plan.calibrate import BOUNDS, Sample, _weights, predict_sample
from llmb.plan.predict import Efficiency

STEP = 1e-3  # the finite-difference step, in the fit's coordinates


def jacobian(items: list[Sample], eff: Efficiency) -> np.ndarray:
    """``d log(step time) / d coordinate`` for every row (rows) and fitted parameter (columns,
    in :data:`~llmb.plan.calibrate.BOUNDS` order)."""
    out = np.zeros((len(items), len(BOUNDS)))
    for j, (name, (_, _, scale)) in enumerate(BOUNDS.items()):
        value = getattr(eff, name)
        if scale == "log":
            up, down = value * math.exp(STEP), value * math.exp(-STEP)
        else:
            up, down = value + STEP, value - STEP
        hi, lo = replace(eff, **{name: up}), replace(eff, **{name: down})
        for i, s in enumerate(items):
            out[i, j] = (math.log(predict_sample(s, hi)) - math.log(predict_sample(s, lo))) / (2 * STEP)
    return out


def conditional_information(fisher: np.ndarray) -> np.ndarray:
    """Each parameter's information with the others free: ``F_pp - F_pr F_rr^+ F_rp``."""
    n = fisher.shape[0]
    out = np.zeros(n)
    for p in range(n):
        rest = [q for q in range(n) if q != p]
        f_rr = fisher[np.ix_(rest, rest)]
        out[p] = fisher[p, p] - fisher[p, rest] @ np.linalg.pinv(f_rr, rcond=1e-10, hermitian=True) @ fisher[rest, p]
    return np.maximum(out, 0.0)


def lost_shares(jac: np.ndarray, weights: np.ndarray, keys: list[str]) -> np.ndarray:
    """For a Jacobian (rows x parameters), row weights and each row's group: the share of each
    parameter's conditional information lost without each group (groups in sorted order as
    rows, parameters as columns)."""
    fisher = jac.T @ (weights[:, None] * jac)
    full = conditional_information(fisher)
    groups = sorted(set(keys))
    out = np.zeros((len(groups), jac.shape[1]))
    for i, g in enumerate(groups):
        rows = np.array([k == g for k in keys])
        without = conditional_information(fisher - jac[rows].T @ (weights[rows][:, None] * jac[rows]))
        for j in range(jac.shape[1]):
            # A parameter the whole catalog leaves unidentified reports 1 for every group.
            identified = full[j] > 1e-12 * max(1.0, fisher[j, j])
            out[i, j] = 1.0 - without[j] / full[j] if identified else 1.0
    return np.clip(out, 0.0, 1.0)


def information_lost(items: list[Sample], eff: Efficiency,
                     group: Callable[[Sample], str] = lambda s: s.workload,
                     jac: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{parameter: {group: share of its conditional information lost without the group}}``
    (0 .. 1) at the parameters ``eff``; ``jac``: :func:`jacobian` of the same rows and
    parameters, when the caller groups them more than one way."""
    keys = [group(s) for s in items]
    shares = lost_shares(jacobian(items, eff) if jac is None else jac, np.asarray(_weights(items)), keys)
    groups = sorted(set(keys))
    return {name: {g: float(shares[i, j]) for i, g in enumerate(groups)} for j, name in enumerate(BOUNDS)}
