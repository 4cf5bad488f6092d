"""Grading spec of the tiny test lab (tests/submissions/make_submissions.py)."""

import numpy as np

from advkit.grading.spec import Check, Spec, fetch


def inputs(rng):
    delta = rng.normal(size=(40, 13)) * rng.uniform(0.01, 10, size=(40, 1))
    delta[0] = 0.0                                   # an all-zero row
    return {"delta": delta}


def grade_norm(ord_):
    def grade(got, inp):
        d = inp["delta"]
        ref = np.linalg.norm(d, ord=ord_, axis=1)   # the grader's own NumPy, not the kernel's
        mine = fetch(got, "norm", ref.shape)
        ok = np.isclose(mine, ref, rtol=1e-9, atol=1e-12)
        if ok.all():
            return 1.0, "correct"
        i = int(np.argmin(ok))
        return 0.0, f"{int((~ok).sum())} of {len(ref)} rows differ; e.g. row {i}: got {mine[i]:.6g}, expected {ref[i]:.6g}"
    return grade


SPEC = Spec(
    inputs=inputs,
    checks=(
        Check("ex1_my_l2", 2, "return {'norm': my_l2(inputs['delta'].copy())}", grade_norm(2), cells=("ex1",)),
        Check("ex2_my_linf", 1, "return {'norm': my_linf(inputs['delta'].copy())}", grade_norm(np.inf), cells=("ex2",)),
    ),
    cell_timeout=5,
)
