"""Grading spec of lab 04 (DeepFool): exercises 1 and 2, judged outside the student's kernel.

Exercise 1: the student's ``linear_deepfool`` on a random affine classifier the grader draws,
against the closed form r* = |f'_l| / ||w'_l||^2 w'_l computed here in NumPy (float64).
Exercise 2: the student's ``my_rho`` on an attack result the grader builds (some failures),
against ``advkit.robustness.empirical_robustness`` imported in the grader's process.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, fetch


def inputs(rng):
    K, D, N = 7, 40, 60
    W = rng.normal(size=(K, D)) * rng.uniform(0.2, 5.0, size=(K, 1))
    b = rng.normal(size=K)
    x = rng.uniform(0.0, 1.0, size=(N, D))
    y = (x @ W.T + b).argmax(1)
    xr = rng.uniform(0.0, 1.0, size=(30, 1, 6, 6))
    xa = np.clip(xr + rng.normal(size=xr.shape) * rng.uniform(0.01, 0.5, size=(30, 1, 1, 1)), 0, 1)
    success = rng.random(30) < 0.7
    success[:2] = (True, False)
    return {"W": W, "b": b, "x": x, "y": y.astype(np.int64), "rx": xr, "rxa": xa, "rsuccess": success}


EX1 = '''
import torch
W, b = torch.from_numpy(inputs["W"].copy()), torch.from_numpy(inputs["b"].copy())
x, y = torch.from_numpy(inputs["x"].copy()), torch.from_numpy(inputs["y"].copy())
return {"r": linear_deepfool(W, b, x, y)}
'''

EX2 = '''
import torch
from advkit.attacks.result import AttackResult
x, xa = torch.from_numpy(inputs["rx"].copy()), torch.from_numpy(inputs["rxa"].copy())
s = torch.from_numpy(inputs["rsuccess"].copy())
zeros = torch.zeros(len(x), dtype=torch.long)
res = AttackResult(x_adv=xa, success=s, x=x, y=zeros, pred=zeros, attack="deepfool")
return {"rho": torch.tensor(float(my_rho(res)), dtype=torch.float64)}
'''


def grade_ex1(got, inp):
    W, b, x, y = inp["W"], inp["b"], inp["x"], inp["y"]
    f = x @ W.T + b
    n = np.arange(len(x))
    f_gap = f - f[n, y][:, None]
    w_gap = W[None] - W[y][:, None]
    d = np.abs(f_gap) / np.linalg.norm(w_gap, axis=2)
    d[n, y] = np.inf
    l = d.argmin(1)
    ref = (np.abs(f_gap[n, l]) / np.linalg.norm(w_gap[n, l], axis=1) ** 2)[:, None] * w_gap[n, l]
    mine = fetch(got, "r", ref.shape)
    err = np.linalg.norm(mine - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    if (err <= 1e-6).all():
        return 1.0, "correct"
    return 0.0, f"{int((err > 1e-6).sum())} of {len(x)} perturbations differ from the closed form (worst relative error {err.max():.2e})"


def grade_ex2(got, inp):
    import torch

    from advkit.attacks.result import AttackResult
    from advkit.robustness import empirical_robustness

    x, xa = torch.from_numpy(inp["rx"]), torch.from_numpy(inp["rxa"])
    zeros = torch.zeros(len(x), dtype=torch.long)
    res = AttackResult(x_adv=xa, success=torch.from_numpy(inp["rsuccess"]), x=x, y=zeros, pred=zeros)
    ref = float(empirical_robustness(res))
    mine = float(fetch(got, "rho", ()))
    if abs(mine - ref) <= 1e-6 * abs(ref):
        return 1.0, "correct"
    return 0.0, f"my_rho gave {mine:.6g}; the empirical robustness of the grader's attack result is {ref:.6g}"


SPEC = Spec(
    inputs=inputs,
    checks=(
        Check("ex1_linear_deepfool", 2, EX1, grade_ex1, cells=("cell-10",),
              description="the closed-form step to the nearest hyperplane"),
        Check("ex2_my_rho", 2, EX2, grade_ex2, cells=("cell-29",), description="DeepFool's rho_adv over the successes"),
    ),
    cell_timeout=180,
)
