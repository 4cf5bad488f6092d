"""Grading spec of lab 00 (taxonomy): exercises 2 and 3, judged outside the student's kernel.

Exercise 2 has closed-form answers: with 8-bit pixels and eps = 0.1 (25.5 grey levels) a grey
pixel 128/255 can take 2 * 25 + 1 = 51 values, a black one 26, the smallest step is 1/255 and the
largest L-infinity norm 25/255. Exercise 3 is the minimal L2 perturbation of a linear classifier,
-f(x) w / ||w||^2, recomputed here from the lab's seed (the grading profile pins seed 0).
"""

import numpy as np

from advkit.grading.spec import Check, Spec, fetch

SEED = 0   # labs/profiles/grading.yaml: 00_taxonomy seed


def grade_ex2(got, inp):
    mine = fetch(got, "v", (4,))
    ref = np.array([1 / 255, 51, 26, 25 / 255])
    names = ["smallest_step", "n_values_grey", "n_values_black", "max_linf"]
    ok = np.isclose(mine, ref, rtol=1e-9, atol=1e-12)
    if ok.all():
        return 1.0, "correct"
    return ok.mean(), "wrong: " + ", ".join(n for n, good in zip(names, ok) if not good)


def grade_ex3(got, inp):
    import torch

    gen = torch.Generator().manual_seed(SEED)
    w = torch.randn(784, generator=gen, dtype=torch.float64)
    X = torch.rand(8, 784, generator=gen, dtype=torch.float64)
    ref = (-(X @ w + 0.5)[:, None] * w / w.norm() ** 2).numpy()
    mine = fetch(got, "delta", ref.shape)
    err = np.abs(mine - ref).max()
    if err <= 1e-9 * np.abs(ref).max():
        return 1.0, "correct"
    return 0.0, f"delta_ex differs from the minimal L2 perturbation by up to {err:.3g}"


SPEC = Spec(
    checks=(
        Check("ex2_integer_grid", 1,
              "return {'v': [float(smallest_step), float(n_values_grey), float(n_values_black), float(max_linf)]}",
              grade_ex2, cells=("1919fb76",)),
        Check("ex3_linear_closed_form", 2, "return {'delta': delta_ex}", grade_ex3, cells=("e4ccd599",)),
    ),
    cell_timeout=180,
)
