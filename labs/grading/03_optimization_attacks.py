"""Grading spec of lab 03 (optimisation attacks): exercises 1, 2 and 3, judged outside the kernel.

Exercise 1: the student's ``cw_loss`` on logits and labels the grader draws, targeted and
untargeted, with the default and other confidences kappa, against the closed form
max(Z_y - max_{i!=y} Z_i, -kappa) (untargeted) and max(max_{i!=t} Z_i - Z_t, -kappa) (targeted)
computed here in NumPy.
Exercise 2: ``to_tanh_space`` on MNIST test digits the grader draws and ``to_pixel_space`` on
arbitrary w, against artanh((2x - 1)(1 - 1e-6)) and (tanh(w) + 1) / 2 in float64 (the tolerance
at pixels 0 and 1 allows float32 arithmetic, where artanh is steep: the lab's visible check uses
the same 0.05).
Exercise 3 depends on the lab's state (``fixed_success``, ``fixed_median``), which the grader
recomputes itself: ``cw_l2`` with one fixed c per run over ``const_grid`` on the lab's images
(``one_per_class`` of the test set), with the grading profile's parameters (the constants
below; ``tests/test_grader_labs.py`` checks them against ``labs/profiles/grading.yaml``).
"""

import math

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, unchanged

CASES = ((0.0, True), (1.5, False), (1.5, True), (5.0, True))   # (kappa, targeted) besides the defaults
# labs/profiles/grading.yaml, 03_optimization_attacks (the lab's defaults where the profile keeps them)
N_IMAGES, CW_ITERATIONS, CW_LR = 10, 100, 0.1
CONST_GRID = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 100)
_cache = {}


def inputs(rng):
    import advkit.data

    z = rng.normal(size=(120, 10)) * rng.uniform(0.5, 5.0, size=(120, 1))
    z[:10] = np.round(z[:10])             # a few rows with ties among the logits
    labels = rng.integers(0, 10, size=120)
    x, _ = advkit.data.mnist("test").tensors
    idx = np.sort(rng.choice(len(x), size=32, replace=False))
    w = rng.normal(size=1000) * 20
    return {"z": z.astype(np.float32), "labels": labels.astype(np.int64),
            "x": x.numpy()[idx].astype(np.float32), "w": w.astype(np.float32)}


EX1 = f'''
import torch
z = torch.from_numpy(inputs["z"].copy()); lab = torch.from_numpy(inputs["labels"].copy())
out = {{"default": cw_loss(z, lab)}}
for i, (kappa, targeted) in enumerate({CASES!r}):
    out[f"c{{i}}"] = cw_loss(z, lab, kappa=kappa, targeted=targeted)
out["z_after"] = z
return out
'''

EX2 = '''
import torch
x = torch.from_numpy(inputs["x"].copy()); w = torch.from_numpy(inputs["w"].copy())
return {"w_of_x": to_tanh_space(x), "x_of_w": to_pixel_space(w)}
'''

EX3 = '''
return {"c_pick": float(c_pick), "l2_pick": float(l2_pick)}
'''


def _cw_ref(z, labels, kappa, targeted):
    n = np.arange(len(z))
    own = z[n, labels]
    other = z.copy()
    other[n, labels] = -np.inf
    other = other.max(1)
    gap = other - own if targeted else own - other
    return np.maximum(gap, -kappa)


def grade_ex1(got, inp):
    z, labels = inp["z"].astype(np.float64), inp["labels"]
    if not unchanged(got, "z_after", z):
        return 0.0, "your function modified the logits"
    score, msgs = 0.0, []
    parts = {False: [("default", 0.0)], True: []}
    for i, (kappa, targeted) in enumerate(CASES):
        parts[targeted].append((f"c{i}", kappa))
    for targeted, cases in parts.items():
        bad = []
        for key, kappa in cases:
            ref = _cw_ref(z, labels, kappa, targeted)
            try:
                mine = fetch(got, key, ref.shape)
            except ValueError as err:
                bad.append(f"κ={kappa:g}: {err}")
                continue
            wrong = int((~(np.abs(mine - ref) <= 1e-5)).sum())
            if wrong:
                bad.append(f"κ={kappa:g}: {wrong} of {len(ref)} values differ from the closed form")
        kind = "targeted" if targeted else "untargeted"
        if bad:
            msgs.append(f"{kind}: " + ", ".join(bad))
        else:
            score += 0.5
    return score, "; ".join(msgs) or "correct"


def grade_ex2(got, inp):
    x, w = inp["x"].astype(np.float64), inp["w"].astype(np.float64)
    score, msgs = 0.0, []
    ref_w = np.arctanh((2 * x - 1) * (1 - 1e-6))
    try:
        mine = fetch(got, "w_of_x", x.shape)
        edge = (x == 0) | (x == 1)
        if not np.isfinite(mine).all():
            msgs.append("to_tanh_space: w must be finite everywhere, also at pixels 0 and 1 (shrink by 1 − 1e-6)")
        elif np.abs(mine - ref_w)[~edge].max() > 1e-5 or np.abs(mine - ref_w)[edge].max() > 0.05:
            msgs.append("to_tanh_space differs from artanh((2x − 1)(1 − 1e-6)) by up to "
                        f"{np.abs(mine - ref_w).max():.3g}")
        else:
            score += 0.5
    except ValueError as err:
        msgs.append(f"to_tanh_space: {err}")
    try:
        mine = fetch(got, "x_of_w", w.shape)
        err = np.abs(mine - (np.tanh(w) + 1) / 2).max() if np.isfinite(mine).all() else math.inf
        if err <= 1e-6:
            score += 0.5
        else:
            msgs.append(f"to_pixel_space differs from (tanh(w) + 1)/2 by up to {err:.3g}")
    except ValueError as err:
        msgs.append(f"to_pixel_space: {err}")
    return score, "; ".join(msgs) or "correct"


def _ex3_reference():
    if "ex3" not in _cache:
        import advkit.data
        from advkit.attacks.cw import cw_l2
        from advkit.robustness import min_norm_stats

        m = cached_model("lenet5")
        x_test, y_test = advkit.data.mnist("test").tensors
        idx = advkit.data.one_per_class(m, x_test, y_test, per_class=max(1, N_IMAGES // 10))
        x, y = x_test[idx], y_test[idx]
        runs = []
        for c in CONST_GRID:
            r = cw_l2(m, x, y, binary_search_steps=1, max_iterations=CW_ITERATIONS, learning_rate=CW_LR, initial_const=c)
            runs.append((r.success_rate, min_norm_stats(r)["median"]))
        _cache["ex3"] = runs
    return _cache["ex3"]


def grade_ex3(got, inp):
    runs = _ex3_reference()
    # "at least 90%": the success rates are float32 numbers, in which 9/10 is 0.89999998 < 0.9 (the
    # lab's own solution and check read it so); a student who counts exactly gets the points too
    picks = sorted({next(i for i, (s, _) in enumerate(runs) if s >= 0.9),
                    next(i for i, (s, _) in enumerate(runs) if s >= 0.9 - 1e-6)})
    c_pick, l2_pick = float(fetch(got, "c_pick", ())), float(fetch(got, "l2_pick", ()))
    k = next((i for i in picks if math.isclose(c_pick, CONST_GRID[i], rel_tol=1e-9)), None)
    score, msgs = 0.0, []
    if k is not None:
        score += 0.5
    else:
        k = picks[0]
        msgs.append(f"c_pick = {c_pick:g}; the smallest c of const_grid whose run fools at least 90% of the "
                    f"images is {CONST_GRID[k]:g} (it fools {runs[k][0]:.0%})")
    if math.isclose(l2_pick, runs[k][1], rel_tol=1e-3):
        score += 0.5
    else:
        msgs.append(f"l2_pick = {l2_pick:.4g}; the median L2 of the successes at c = {CONST_GRID[k]:g} is {runs[k][1]:.4g}")
    return score, "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=lambda: cached_model("lenet5"),
    checks=(
        Check("ex1_cw_loss", 2, EX1, grade_ex1, cells=("ff24d3a1",),
              description="the C&W margin loss equals its closed form on the grader's logits"),
        Check("ex2_tanh_space", 2, EX2, grade_ex2, cells=("de1a66b1",),
              description="the tanh change of variable and its inverse, on the grader's digits and w"),
        Check("ex3_c_pick", 1, EX3, grade_ex3, cells=("e82b0289",),
              description="the smallest fixed c that fools 90%, recomputed by the grader"),
    ),
    cell_timeout=240,
)
