"""Grading spec of lab 07 (common perturbations): exercises 1 and 2, judged outside the student's kernel.

Exercise 1: the student's ``my_brightness`` on a batch the grader draws (three-channel noise and
MNIST test digits as RGB, with pixels at exactly 0, 0.5 and 1) at several ``change`` levels,
against ``advkit.perturbations.brightness`` imported here, to 1e-5 as the lab's visible check; the
pixels at 0 and 1 to 1e-7 (fastai's clamp to [1e-7, 1 - 1e-7] before the logit moves them).
Exercise 2: the student's ``worst_rotation`` on MNIST test digits the grader draws, with LeNet-5
and the CNN from the model cache (the function takes the model as an argument) and two angle sets:
the lab's integer grid -30..30 and unsorted, non-integer angles the grader draws. The grader
computes the cross-entropy at every angle with ``advkit.perturbations.rotate_translate`` in its
own process, one angle at a time as the lab's check does, and accepts any candidate angle whose
loss is within 1e-5 (relative to max(1, loss)) of the largest. The digit ``x1`` that the lab's
solution cell picks from its section 6 is lab state, but the function does not depend on it, so
the grader calls it on its own digits.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, unchanged

CHANGES = (0.1, 0.3, 0.5, 0.9)
EDGE_CHANGES = (0.1, 0.9)      # the lab's check of the pixels at 0 and 1
MODELS = ("lenet5", "cnn")
N_DIGITS = 6


def prepare():
    """Train or load the lab's zoo models outside the sandbox, where the model cache is read-only."""
    for name in ("lenet5", "cnn", "fc500_150_10"):
        cached_model(name)


def inputs(rng):
    import advkit.data

    x_all, y_all = advkit.data.mnist("test").tensors
    noise = rng.random((4, 3, 9, 9))
    noise[0, 0, 0, :3] = (0.0, 1.0, 0.5)
    noise[1, 2, 4, :] = rng.choice([0.0, 1.0], size=9)
    idx = rng.choice(len(y_all), size=3, replace=False)
    digits = np.repeat(x_all.numpy()[idx], 3, axis=1)          # grey digits as RGB, as the lab perturbs them
    pick = np.sort(rng.choice(len(y_all), size=N_DIGITS, replace=False))
    return {"bnoise": noise.astype(np.float32), "bdigits": digits.astype(np.float32),
            "bedges": np.array([0.0, 1.0], dtype=np.float32).reshape(1, 1, 1, 2),
            "rx": x_all.numpy()[pick].astype(np.float32), "ry": y_all.numpy()[pick].astype(np.int64),
            "angles0": np.arange(-30, 31, dtype=np.float64),
            "angles1": np.round(rng.uniform(-60, 60, size=17), 2)}


EX1 = f'''
import torch
out = {{}}
for name in ("bnoise", "bdigits", "bedges"):
    x = torch.from_numpy(inputs[name].copy())
    for i, change in enumerate({CHANGES!r}):
        out[f"{{name}}{{i}}"] = my_brightness(x, change)
    out[name + "_after"] = x
return out
'''

EX2 = f'''
import torch, advkit.zoo
x, y = torch.from_numpy(inputs["rx"].copy()), torch.from_numpy(inputs["ry"].copy())
out = {{}}
for name in {MODELS!r}:
    m = advkit.zoo.load(name, device="cpu", progress=False).eval()
    for j in range(2):
        angles = torch.from_numpy(inputs[f"angles{{j}}"].copy())
        out[f"{{name}}_{{j}}"] = [float(worst_rotation(m, x[i:i + 1], y[i:i + 1], angles)) for i in range(len(x))]
out["x_after"] = x
return out
'''


def grade_ex1(got, inp):
    import torch

    import advkit.perturbations as P

    for name in ("bnoise", "bdigits", "bedges"):
        if not unchanged(got, name + "_after", inp[name]):
            return 0.0, "your function modified its input x"
    score, msgs = 0.0, []
    for i, change in enumerate(CHANGES):
        bad = []
        for name in ("bnoise", "bdigits"):
            x = inp[name]
            ref = P.brightness(torch.from_numpy(x), change).numpy().astype(np.float64)
            try:
                mine = fetch(got, f"{name}{i}", ref.shape)
            except ValueError as err:
                bad.append(str(err))
                continue
            err = np.abs(mine - ref).max() if np.isfinite(mine).all() else np.inf
            if not err < 1e-5:
                bad.append(f"largest difference {err:.2e} from P.brightness (work in logit space, not on the pixels)")
        if bad:
            msgs.append(f"change={change:g}: " + bad[0])
        else:
            score += 0.2
    gaps = []
    for i, change in enumerate(CHANGES):
        if change not in EDGE_CHANGES:
            continue
        ref = P.brightness(torch.from_numpy(inp["bedges"]), change).numpy().astype(np.float64)
        try:
            mine = fetch(got, f"bedges{i}", ref.shape)
        except ValueError as err:
            gaps.append(f"change={change:g}: {err}")
            continue
        gap = np.abs(mine - ref).max() if np.isfinite(mine).all() else np.inf
        if not gap < 1e-7:
            gaps.append(f"change={change:g}: off by {gap:.1e}")
    if gaps:
        msgs.append("pixels at 0 and 1: " + ", ".join(gaps)
                    + "; clamp x to [1e-7, 1 - 1e-7] before the logit, as fastai does")
    else:
        score += 0.2
    return score, "; ".join(msgs) or "correct"


def _losses(model, x1, y1, angles):
    """The cross-entropy at every angle, one rotation at a time (the lab's check)."""
    import torch
    from torch.nn import functional as F

    import advkit.perturbations as P

    x1, y1 = torch.from_numpy(x1), torch.from_numpy(y1)
    with torch.no_grad():
        return np.array([F.cross_entropy(model(P.rotate_translate(x1, float(a))), y1).item() for a in angles])


def grade_ex2(got, inp):
    if not unchanged(got, "x_after", inp["rx"]):
        return 0.0, "your function modified its input x1"
    x, y = inp["rx"], inp["ry"]
    score, msgs = 0.0, []
    for name in MODELS:
        model = cached_model(name)
        for j in range(2):
            angles = inp[f"angles{j}"]
            what = f"{name}, {'the angles -30..30' if j == 0 else 'unsorted non-integer angles'}"
            try:
                mine = fetch(got, f"{name}_{j}", (len(x),))
            except ValueError as err:
                msgs.append(f"{what}: {err}")
                continue
            wrong = []
            for i in range(len(x)):
                loss = _losses(model, x[i:i + 1], y[i:i + 1], angles)
                hit = np.nonzero(np.abs(angles - mine[i]) <= 1e-9)[0]
                if len(hit) == 0:
                    wrong.append(f"digit {i}: {mine[i]:g} is not one of the candidate angles")
                elif loss[hit[0]] < loss.max() - 1e-5 * max(1.0, abs(loss.max())):
                    wrong.append(f"digit {i}: loss {loss[hit[0]]:.3f} at {mine[i]:g}°, "
                                 f"but {loss.max():.3f} at {angles[loss.argmax()]:g}°")
            if wrong:
                msgs.append(f"{what}: {len(wrong)} of {len(x)} digits wrong ({wrong[0]})")
            else:
                score += 0.25
    return score, "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=prepare,
    checks=(
        Check("ex1_my_brightness", 2, EX1, grade_ex1, cells=("b6c86292",),
              description="fastai's brightness in logit space equals P.brightness on the grader's batches"),
        Check("ex2_worst_rotation", 2, EX2, grade_ex2, cells=("cdd1c94d",),
              description="the angle of largest loss, for two models and two angle sets, recomputed by the grader"),
    ),
    cell_timeout=180,
)
