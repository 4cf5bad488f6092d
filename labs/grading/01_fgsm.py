"""Grading spec of lab 01 (FGSM): exercises 1 and 2, judged outside the student's kernel.

The kernel calls the student's ``my_fgsm`` / ``my_targeted_fgsm`` on MNIST test digits and
targets that the grader draws, with LeNet-5 from the model cache; the grader compares the
returned images with ``advkit.attacks.fgsm`` on the same weights, computed in its own process.
Exercise 3 (``eps90``/``rho90``) depends on the lab's state and is left to its visible check.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, mismatch_fraction, unchanged

N = 64
EPS = (0.1, 0.25)


def inputs(rng):
    import advkit.data

    x, y = advkit.data.mnist("test").tensors
    idx = np.sort(rng.choice(len(y), size=N, replace=False))
    yy = y.numpy()[idx].astype(np.int64)
    target = (yy + rng.integers(1, 10, size=N)) % 10           # a target other than the label
    return {"x": x.numpy()[idx].astype(np.float32), "y": yy, "target": target.astype(np.int64)}


EXPORT = '''
import torch, advkit.zoo
m = advkit.zoo.load("lenet5", device="cpu", progress=False).eval()
x = torch.from_numpy(inputs["x"].copy()); y = torch.from_numpy(inputs[{labels!r}].copy())
out = {{}}
for i, eps in enumerate({eps!r}):
    out[f"adv{{i}}"] = {fn}(m, x, y, eps)
out["x_after"] = x
return out
'''


def grade_fgsm(targeted):
    def grade(got, inp):
        import torch

        from advkit.attacks import fgsm

        x, y = torch.from_numpy(inp["x"]), torch.from_numpy(inp["y"])
        if not unchanged(got, "x_after", inp["x"]):
            return 0.0, "your function modified its input x"
        score, msgs = 0.0, []
        for i, eps in enumerate(EPS):
            kw = {"target": torch.from_numpy(inp["target"])} if targeted else {}
            ref = fgsm(cached_model("lenet5"), x, y, eps=eps, **kw).x_adv.numpy().astype(np.float64)
            try:
                mine = fetch(got, f"adv{i}", ref.shape)
            except ValueError as err:
                msgs.append(f"ε={eps}: {err}")
                continue
            bad = mismatch_fraction(mine, ref, 1e-6)
            if bad <= 1e-4:
                score += 0.5
            else:
                msgs.append(f"ε={eps}: {bad:.2%} of the pixels differ from advkit's {'targeted ' if targeted else ''}FGSM")
        return score, "; ".join(msgs) or "correct"
    return grade


SPEC = Spec(
    inputs=inputs,
    prepare=lambda: cached_model("lenet5"),
    checks=(
        Check("ex1_my_fgsm", 2, EXPORT.format(labels="y", eps=EPS, fn="my_fgsm"), grade_fgsm(False), cells=("cell-19",),
              description="my_fgsm equals advkit's FGSM on the grader's digits"),
        Check("ex2_my_targeted_fgsm", 2, EXPORT.format(labels="target", eps=EPS, fn="my_targeted_fgsm"),
              grade_fgsm(True), cells=("cell-29",), description="my_targeted_fgsm equals advkit's targeted FGSM"),
    ),
    cell_timeout=180,
)
