"""Grading spec of lab 08 (thesis reproduction): exercises 1 to 3, judged outside the student's kernel.

All three exercises are pure functions, judged on inputs the grader draws; none depends on the
lab's state (its ResNet-50, images or attacks).

Exercise 1: the student's ``my_wilson(k, n)`` for proportions at the edges (k = 0 and k = n, from
n = 1 up) and drawn inside them, with the default z, and ``my_wilson(k, n, z)`` for drawn z in
[0.5, 3]; the reference is ``advkit.thesis.proportion_ci`` (scipy's Wilson interval) at the
confidence 2 Phi(z) - 1, to 1e-6 as the lab's check.
Exercise 2: the student's ``mean_true_prob(logits, y)`` on four float32 batches the grader draws
(one image; 64 images of 10 classes; 2 classes; 100 classes) against the softmax computed here in
float64, to 1e-5 as the lab's check; the last fifth of the points needs a Python float.
Exercise 3: the student's ``min_images(percent)`` on the thesis's four percentages, 50, 100 and 0,
and on percentages drawn at 2 decimals, and ``min_images(percent, decimals)`` at 0, 1 and 3
decimals; the reference is an exact brute force over n in integers (the k nearest to n p / 100
is the only candidate), the lab's strict |100 k / n - p| < half a unit; where a k / n lies
exactly half a unit away, the answer of the closed interval is accepted too; the last quarter of
the points needs a Python int.

``prepare`` trains or loads the lab's ResNet-50 with the grading profile's parameters (the
constants below; ``tests/test_grader_labs.py`` checks them against ``labs/profiles/grading.yaml``),
because the kernel's model cache is read-only.
"""

import math

import numpy as np

from advkit.grading.spec import Check, Spec, fetch, unchanged

DEFAULT_Z = 1.959964                 # the lab's default z (95%; scipy's 1.95996398 differs by 1.5e-8)
BATCHES = ((1, 10, 3.0), (64, 10, 5.0), (33, 2, 2.0), (20, 100, 3.0))    # (images, classes, logit spread)
THESIS_PERCENTS = (24.0, 57.73, 89.98, 99.99, 50.0, 100.0, 0.0)
OTHER_DECIMALS = (0, 0, 1, 1, 3, 3)
# labs/profiles/grading.yaml, 08_thesis_reproduction: the ResNet-50 the kernel loads from the model cache
SCALE, DATASETS = "cpu", ("mnist",)
SETTINGS = {"mnist": {"n_train": 2000, "n_val": 200, "epochs": 1, "batch_size": 50, "pretrained": False}}


def prepare():
    """Train or load the lab's ResNet-50 outside the sandbox, where the model cache is read-only."""
    from advkit import thesis

    for d in DATASETS:
        thesis.train(thesis.config(d, SCALE, **SETTINGS.get(d, {})), device="cpu", progress=False)


def inputs(rng):
    out = {}
    # exercise 1: k = 0 and k = n, then k inside, with the default z; then drawn z
    edges_n = np.array([1, 2, 10, 57, 500, 1999])
    out["wk"] = np.concatenate([np.zeros_like(edges_n), edges_n])
    out["wn"] = np.concatenate([edges_n, edges_n])
    n = rng.integers(2, 2000, size=8)
    out["ik"], out["in"] = rng.integers(1, n), n                      # 1 <= k < n
    n = rng.integers(1, 800, size=6)
    k = rng.integers(0, n + 1)
    k[0], k[1] = 0, n[1]
    out["zk"], out["zn"], out["zz"] = k, n, np.round(rng.uniform(0.5, 3.0, size=6), 4)
    # exercise 2: logits and labels
    for i, (b, c, spread) in enumerate(BATCHES):
        out[f"logits{i}"] = (spread * rng.normal(size=(b, c))).astype(np.float32)
        out[f"labels{i}"] = rng.integers(0, c, size=b).astype(np.int64)
    # exercise 3: percentages
    out["p_thesis"] = np.array(THESIS_PERCENTS)
    out["p_drawn"] = np.round(rng.uniform(0.0, 100.0, size=6), 2)
    out["d_other"] = np.array(OTHER_DECIMALS)
    out["p_other"] = np.array([round(float(rng.uniform(0.0, 100.0)), int(d)) for d in OTHER_DECIMALS])
    return out


EX1 = '''
def pair(r):
    v = [float(t) for t in r]
    return v if len(v) == 2 else [float("nan")] * 2
out = {}
for name in ("w", "i"):
    res = [my_wilson(int(k), int(n)) for k, n in zip(inputs[name + "k"], inputs[name + "n"])]
    out[name] = [pair(r) for r in res]
    out[name + "_len"] = [len(r) for r in res]
res = [my_wilson(int(k), int(n), float(z)) for k, n, z in zip(inputs["zk"], inputs["zn"], inputs["zz"])]
out["z"] = [pair(r) for r in res]
out["z_len"] = [len(r) for r in res]
return out
'''

EX2 = f'''
import torch
out = {{}}
for i in range({len(BATCHES)}):
    logits = torch.from_numpy(inputs[f"logits{{i}}"].copy())
    y = torch.from_numpy(inputs[f"labels{{i}}"].copy())
    r = mean_true_prob(logits, y)
    out[f"value{{i}}"] = r
    out[f"float{{i}}"] = float(isinstance(r, float))
    out[f"logits{{i}}_after"], out[f"labels{{i}}_after"] = logits, y
return out
'''

EX3 = '''
out = {}
for name in ("p_thesis", "p_drawn"):
    res = [min_images(float(p)) for p in inputs[name]]
    out[name] = [float(m) for m in res]
    out[name + "_int"] = [float(isinstance(m, int) and not isinstance(m, bool)) for m in res]
res = [min_images(float(p), int(d)) for p, d in zip(inputs["p_other"], inputs["d_other"])]
out["p_other"] = [float(m) for m in res]
out["p_other_int"] = [float(isinstance(m, int) and not isinstance(m, bool)) for m in res]
return out
'''


def _wilson(k, n, z):
    from advkit.thesis import proportion_ci

    return proportion_ci(int(k), int(n), method="wilson", confidence=math.erf(z / math.sqrt(2)))


def grade_ex1(got, inp):
    groups = (("k = 0 and k = n", "w", inp["wk"], inp["wn"], [DEFAULT_Z] * len(inp["wk"])),
              ("0 < k < n", "i", inp["ik"], inp["in"], [DEFAULT_Z] * len(inp["ik"])),
              ("another z", "z", inp["zk"], inp["zn"], inp["zz"]))
    right, msgs = 0, []
    for what, key, ks, ns, zs in groups:
        try:
            mine = fetch(got, key, (len(ks), 2))
            lens = fetch(got, key + "_len", (len(ks),))
        except ValueError as err:
            msgs.append(f"{what}: {err}")
            continue
        if (lens != 2).any():
            msgs.append(f"{what}: return a pair (low, high), not {int(lens[lens != 2][0])} values")
            continue
        wrong = []
        for (k, n, z), m in zip(zip(ks, ns, zs), mine):
            ref = _wilson(k, n, float(z))
            if not (np.isfinite(m).all() and np.abs(m - ref).max() < 1e-6):
                wrong.append(f"k={k}, n={n}" + ("" if key != "z" else f", z={float(z):g}")
                             + f": ({m[0]:.6f}, {m[1]:.6f}), expected ({ref[0]:.6f}, {ref[1]:.6f})")
        if wrong:
            hint = " (use the argument z)" if key == "z" else ""
            msgs.append(f"{what}: {len(wrong)} of {len(ks)} wrong, e.g. {wrong[0]}{hint}")
        else:
            right += 1
    return right / len(groups), "; ".join(msgs) or "correct"


def grade_ex2(got, inp):
    for i in range(len(BATCHES)):
        if not (unchanged(got, f"logits{i}_after", inp[f"logits{i}"])
                and unchanged(got, f"labels{i}_after", inp[f"labels{i}"])):
            return 0.0, "your function modified its input logits or y"
    right, msgs, floats = 0, [], True
    for i, (b, c, _) in enumerate(BATCHES):
        logits = inp[f"logits{i}"].astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        ref = float((p / p.sum(1, keepdims=True))[np.arange(b), inp[f"labels{i}"]].mean())
        what = f"{b} image{'s' if b > 1 else ''}, {c} classes"
        try:
            mine = float(fetch(got, f"value{i}", ()))
        except ValueError as err:
            msgs.append(f"{what}: return one number ({err})")
            continue
        floats &= float(fetch(got, f"float{i}", ())) == 1.0
        if abs(mine - ref) < 1e-5:
            right += 1
        else:
            msgs.append(f"{what}: {mine:.6f}, expected {ref:.6f} (the softmax over the classes, "
                        "each image's true class, then the mean over the batch)")
    if right == len(BATCHES) and not floats:
        msgs.append("return a Python float (float(...)), not a tensor or array")
    return (right + (right == len(BATCHES) and floats)) / (len(BATCHES) + 1), "; ".join(msgs) or "correct"


def _min_images(percent, decimals):
    """The smallest n with some k / n within half a unit of ``percent``: strict (the lab's) and closed."""
    scale = 10 ** int(decimals)
    p = round(float(percent) * scale)          # percent = p / scale exactly
    found = {}
    n = 1
    while len(found) < 2:
        k0 = (p * n) // (100 * scale)
        for k in (k0, k0 + 1):
            if 0 <= k <= n:
                gap = abs(200 * scale * k - 2 * p * n)   # 2 scale n |100 k / n - percent|, against n
                if gap < n:
                    found.setdefault("open", (n, k))
                if gap <= n:
                    found.setdefault("closed", (n, k))
        n += 1
    return found["open"], found["closed"]


def grade_ex3(got, inp):
    groups = (("the thesis's percentages, 50, 100 and 0", "p_thesis", inp["p_thesis"], [2] * len(inp["p_thesis"])),
              ("drawn percentages at 2 decimals", "p_drawn", inp["p_drawn"], [2] * len(inp["p_drawn"])),
              ("other decimals", "p_other", inp["p_other"], inp["d_other"]))
    right, msgs, ints = 0, [], True
    for what, key, ps, ds in groups:
        try:
            mine = fetch(got, key, (len(ps),))
            ints &= bool((fetch(got, key + "_int", (len(ps),)) == 1.0).all())
        except ValueError as err:
            msgs.append(f"{what}: {err}")
            continue
        wrong = []
        for p, d, m in zip(ps, ds, mine):
            (n, k), (n_closed, _) = _min_images(p, d)
            if m not in (n, n_closed):
                wrong.append(f"min_images({float(p):.{int(d)}f}, decimals={int(d)}) = {m:g}, expected {n} "
                             f"({k}/{n} = {100 * k / n:.{int(d) + 2}f}%)")
        if wrong:
            msgs.append(f"{what}: {len(wrong)} of {len(ps)} wrong, e.g. {wrong[0]}")
        else:
            right += 1
    if right == len(groups) and not ints:
        msgs.append("return a Python int, not a float or NumPy number")
    return (right + (right == len(groups) and ints)) / (len(groups) + 1), "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=prepare,
    checks=(
        Check("ex1_my_wilson", 2, EX1, grade_ex1, cells=("cell-25",),
              description="the Wilson interval equals scipy's for the grader's k, n (k = 0 and k = n too) and z"),
        Check("ex2_mean_true_prob", 1, EX2, grade_ex2, cells=("cell-28",),
              description="the mean true-class probability of the grader's logits, as a float"),
        Check("ex3_min_images", 2, EX3, grade_ex3, cells=("cell-31",),
              description="the fewest images for a percentage, against the grader's brute force"),
    ),
    cell_timeout=180,
)
