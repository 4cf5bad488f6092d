"""Grading spec of lab 02 (BIM and PGD): exercises 1, 2 and 3, judged outside the student's kernel.

Exercise 1: the kernel iterates the student's ``my_pgd_linf_step`` on MNIST test digits the grader
draws, with LeNet-5 from the model cache (one step of alpha = 1.5 eps, where the projection acts,
and five steps of 0.03 that reach past eps); the grader compares with ``advkit.attacks.pgd.pgd``
(``max_iter`` = the number of steps) on the same weights, in its own process.
Exercise 2: the student's ``my_project_l2`` on a batch the grader draws (norms from 0 to about
100, some inside the ball), against the closed form delta * min(1, eps / ||delta||_2) in NumPy.
Exercise 3 depends on the lab's state (``res_loss``), which the grader recomputes itself: PGD on
the first ``n_loss`` test digits with the grading profile's ``eps_main``, ``eps_step`` and
``max_iter`` (the constants below; ``tests/test_grader_labs.py`` checks that they match
``labs/profiles/grading.yaml``), and ``same_as_fgsm`` from one PGD step and FGSM.
The comment that exercise 3 asks for is not graded.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, mismatch_fraction, unchanged

N = 64
STEPS = ((0.1, 0.15, 1), (0.1, 0.03, 5))   # (eps, alpha, steps), as the lab's visible check
EPS_L2 = (0.5, 3.0)
# labs/profiles/grading.yaml, 02_pgd (the lab's defaults where the profile keeps them)
N_LOSS, EPS_MAIN, EPS_STEP, MAX_ITER = 50, 0.1, 0.01, 40
_cache = {}


def inputs(rng):
    import advkit.data

    x, y = advkit.data.mnist("test").tensors
    idx = np.sort(rng.choice(len(y), size=N, replace=False))
    scales = np.array([0.0, 0.01, 0.05, 0.1, 0.3, 0.5, 1.0, 2.0, 3.5, 5.0])
    delta = rng.normal(size=(len(scales) * 2, 1, 28, 28)) * np.tile(scales, 2)[:, None, None, None]
    return {"x": x.numpy()[idx].astype(np.float32), "y": y.numpy()[idx].astype(np.int64),
            "delta": delta.astype(np.float32)}


EX1 = f'''
import torch, advkit.zoo
m = advkit.zoo.load("lenet5", device="cpu", progress=False).eval()
x = torch.from_numpy(inputs["x"].copy()); y = torch.from_numpy(inputs["y"].copy())
out = {{}}
for i, (eps, alpha, steps) in enumerate({STEPS!r}):
    mine = x
    for _ in range(steps):
        mine = my_pgd_linf_step(m, x, mine, y, eps, alpha)
    out[f"adv{{i}}"] = mine
    out[f"grad{{i}}"] = float(bool(getattr(mine, "requires_grad", False)))
out["x_after"] = x
return out
'''

EX2 = f'''
import torch
d = torch.from_numpy(inputs["delta"].copy())
out = {{f"p{{i}}": my_project_l2(d, eps) for i, eps in enumerate({EPS_L2!r})}}
out["d_after"] = d
return out
'''

EX3 = '''
keys = sorted(corner_fraction)
return {"same": float(bool(same_as_fgsm)), "alphas": [float(a) for a in keys],
        "fractions": [float(corner_fraction[a]) for a in keys]}
'''


def grade_ex1(got, inp):
    import torch

    from advkit.attacks.pgd import pgd

    x, y = torch.from_numpy(inp["x"]), torch.from_numpy(inp["y"])
    if not unchanged(got, "x_after", inp["x"]):
        return 0.0, "your function modified its input x"
    score, msgs = 0.0, []
    for i, (eps, alpha, steps) in enumerate(STEPS):
        ref = pgd(cached_model("lenet5"), x, y, eps=eps, eps_step=alpha, max_iter=steps).x_adv
        ref = ref.numpy().astype(np.float64)
        try:
            mine = fetch(got, f"adv{i}", ref.shape)
        except ValueError as err:
            msgs.append(f"ε={eps}, α={alpha}, {steps} step(s): {err}")
            continue
        bad = mismatch_fraction(mine, ref, 1e-5)
        if float(fetch(got, f"grad{i}", ())) != 0.0:
            msgs.append("return a tensor that does not require gradients (.detach())")
        elif bad <= 1e-3:   # the lab's tolerance: a zero gradient component may flip sign under rounding
            score += 0.5
        else:
            msgs.append(f"ε={eps}, α={alpha}, {steps} step(s): {bad:.2%} of the pixels differ from advkit's PGD")
    return score, "; ".join(msgs) or "correct"


def grade_ex2(got, inp):
    d = inp["delta"].astype(np.float64)
    norms = np.sqrt((d.reshape(len(d), -1) ** 2).sum(1))
    if not unchanged(got, "d_after", d):
        return 0.0, "your function modified its input delta"
    score, msgs = 0.0, []
    for i, eps in enumerate(EPS_L2):
        factor = np.minimum(1.0, eps / np.maximum(norms, 1e-300))
        ref = d * factor[:, None, None, None]
        try:
            mine = fetch(got, f"p{i}", d.shape)
        except ValueError as err:
            msgs.append(f"ε={eps}: {err}")
            continue
        if not np.isfinite(mine).all():
            msgs.append(f"ε={eps}: the result has NaN or inf (δ = 0 must come back as 0)")
            continue
        inside = norms <= eps
        err = np.abs(mine - ref).reshape(len(d), -1).max(1) / np.maximum(np.abs(ref).reshape(len(d), -1).max(1), 1e-12)
        if not np.array_equal(mine[inside], d[inside]):
            msgs.append(f"ε={eps}: samples inside the ball must not move")
        elif (err <= 1e-5).all():
            score += 0.5
        else:
            msgs.append(f"ε={eps}: {int((err > 1e-5).sum())} of {len(d)} samples differ from δ·min(1, ε/‖δ‖₂)")
    return score, "; ".join(msgs) or "correct"


def _ex3_reference():
    if "ex3" not in _cache:
        import torch

        import advkit.data
        from advkit.attacks import fgsm
        from advkit.attacks.pgd import pgd

        x_test, y_test = advkit.data.mnist("test").tensors
        x, y = x_test[:N_LOSS], y_test[:N_LOSS]
        m = cached_model("lenet5")
        one = pgd(m, x, y, eps=EPS_MAIN, eps_step=EPS_MAIN, max_iter=1).x_adv
        same = bool(torch.equal(one, fgsm(m, x, y, eps=EPS_MAIN).x_adv))
        fractions = {}
        for a in (EPS_STEP, EPS_MAIN / 2, 2.5 * EPS_MAIN):   # the lab's alphas
            r = pgd(m, x, y, eps=EPS_MAIN, eps_step=a, max_iter=MAX_ITER, record_loss=True)
            moved = (r.delta != 0) & (r.x_adv > 0) & (r.x_adv < 1)
            fractions[a] = ((r.delta.abs() >= EPS_MAIN - 1e-6) & moved).sum().item() / moved.sum().item()
        _cache["ex3"] = same, fractions
    return _cache["ex3"]


def grade_ex3(got, inp):
    same, fractions = _ex3_reference()
    score, msgs = 0.0, []
    if (float(fetch(got, "same", ())) != 0.0) == same:
        score += 0.25
    else:
        msgs.append(f"same_as_fgsm should be {same}")
    alphas, mine = fetch(got, "alphas"), fetch(got, "fractions")
    ref_alphas = sorted(fractions)
    if (alphas.shape != (len(ref_alphas),) or mine.shape != alphas.shape
            or not np.allclose(alphas, ref_alphas, rtol=1e-9, atol=0)):
        msgs.append(f"corner_fraction needs one entry per α of res_loss ({', '.join(f'{a:g}' for a in ref_alphas)})")
        return score, "; ".join(msgs)
    for a, v in zip(ref_alphas, mine):
        # a few pixels may land differently under another thread count: 1e-3 is about 5 pixels here
        if abs(v - fractions[a]) <= 1e-3:
            score += 0.25
        else:
            msgs.append(f"α={a:g}: corner fraction {v:.4f}, the grader's PGD gives {fractions[a]:.4f}")
    return score, "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=lambda: cached_model("lenet5"),
    checks=(
        Check("ex1_my_pgd_linf_step", 2, EX1, grade_ex1, cells=("cell-10",),
              description="one and five L∞ PGD steps equal advkit's PGD on the grader's digits"),
        Check("ex2_my_project_l2", 2, EX2, grade_ex2, cells=("cell-15",),
              description="the L2 projection equals the closed form on the grader's batch"),
        Check("ex3_pgd_as_fgsm", 2, EX3, grade_ex3, cells=("cell-25",),
              description="same_as_fgsm and the corner fractions, recomputed by the grader"),
    ),
    cell_timeout=180,
)
