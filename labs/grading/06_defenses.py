"""Grading spec of lab 06 (defenses): exercises 1 and 2, judged outside the student's kernel.

Neither exercise depends on the lab's state: both are judged on inputs the grader draws.

Exercise 1: the student's ``my_fgsm_loss`` on a small CNN the grader draws (``advkit.models.cnn``
with width 0.25, as the lab's visible check, with random weights that travel as plain arrays) and
MNIST test digits, for several (eps, alpha), in training mode; the kernel exports the loss and its
gradient with respect to every parameter. The grader rebuilds the network in its own process and
computes Goodfellow et al.'s mixed loss alpha CE(x) + (1 - alpha) CE(x + delta) with the FGSM
point of ``advkit.defenses.training.training_perturbation`` (one step of eps from the clean
point), and its parameter gradients, to 1e-5 (relative to the largest, at least 1) as the lab.
Exercise 2: the student's ``my_bpda`` on MNIST test digits with three transforms (2-bit depth
reduction and JPEG, non-differentiable; a Gaussian blur, differentiable with a gradient other
than the identity's): the value must be the transform's, computed here, and the gradient of
(w * out).sum() must be w (the identity's) for a w the grader draws. Then PGD through
``preprocess(lenet, lambda z: my_bpda(BitDepth(2), z))``, as the lab's check, against PGD through
the library's BPDA (``preprocess(..., bpda=True)``) on LeNet-5 from the model cache, here.

``prepare`` trains or loads every zoo model the lab uses with the grading profile's parameters
(the constants below; ``tests/test_grader_labs.py`` checks them against
``labs/profiles/grading.yaml``), because the kernel's model cache is read-only.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, mismatch_fraction, unchanged

CASES = ((0.1, 0.5), (0.1, 0.0), (0.1, 1.0), (0.3, 0.25))   # (eps, alpha) of exercise 1
TRANSFORMS = ("BitDepth(bits=2)", "JPEG(quality=75)", "GaussianBlur(sigma=1.0)")
PGD_EPS = 0.1                                                 # the lab's eps; step eps / 8, 20 steps
# labs/profiles/grading.yaml, 06_defenses (the lab's defaults where the profile keeps them):
# the zoo models of section 1 and the capacity sweep of section 2 (the weight-decay curve caches nothing)
ADV_NAME, EPS, WIDTHS, N_SWEEP, SWEEP_EPOCHS = "cnn_adv", 0.1, (0.25, 0.5), 500, 1

NET = '''
def make_net(inputs):
    import torch
    import advkit.models
    net = advkit.models.cnn(width=0.25)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(inputs["net_" + name.replace(".", "_")].copy()))
    return net
'''


def make_net(inp):
    ns = {}
    exec(NET, ns)
    return ns["make_net"](inp)


def _transform(text):
    from advkit.defenses.transforms import JPEG, BitDepth, GaussianBlur

    return eval(text, {"BitDepth": BitDepth, "JPEG": JPEG, "GaussianBlur": GaussianBlur})


def prepare():
    """Train or load the lab's zoo models outside the sandbox, where the model cache is read-only."""
    import torch

    from advkit.defenses import load_mlp_64_64
    from advkit.defenses.training import capacity_sweep

    for name in ("cnn", ADV_NAME, "cnn_distilled", "lenet5"):
        cached_model(name)
    load_mlp_64_64(device="cpu", progress=False)
    one = (torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))   # the evaluation is the lab's business
    capacity_sweep(WIDTHS, methods=("fast_fgsm",), eps=EPS, n_train=N_SWEEP, epochs=SWEEP_EPOCHS, eval_data=one,
                   device="cpu", progress=False)


def inputs(rng):
    import torch

    import advkit.data
    import advkit.models

    x_all, y_all = advkit.data.mnist("test").tensors
    out, fan = {}, 1
    # PyTorch's default initialisation (uniform within 1/sqrt(fan_in)), three times wider, so that
    # the random network is confident and the clean and adversarial losses differ clearly
    with torch.random.fork_rng():        # the network's own initialisation is replaced: leave torch's RNG alone
        shapes = [(name, tuple(p.shape)) for name, p in advkit.models.cnn(width=0.25).named_parameters()]
    for name, shape in shapes:          # each weight, then its bias
        if len(shape) > 1:
            fan = int(np.prod(shape[1:]))
        out["net_" + name.replace(".", "_")] = (rng.uniform(-3, 3, size=shape) / np.sqrt(fan)).astype(np.float32)
    idx = np.sort(rng.choice(len(y_all), size=64, replace=False))
    out["fx"], out["fy"] = x_all.numpy()[idx].astype(np.float32), y_all.numpy()[idx].astype(np.int64)
    idx = np.sort(rng.choice(len(y_all), size=32, replace=False))
    out["bx"], out["by"] = x_all.numpy()[idx].astype(np.float32), y_all.numpy()[idx].astype(np.int64)
    out["bw"] = rng.normal(size=out["bx"].shape).astype(np.float32)
    return out


EX1 = NET + f'''
import torch
net = make_net(inputs)
params = list(net.parameters())
x = torch.from_numpy(inputs["fx"].copy()); y = torch.from_numpy(inputs["fy"].copy())
out = {{}}
for i, (eps, alpha) in enumerate({CASES!r}):
    loss = my_fgsm_loss(net, x, y, eps, alpha)
    graph = isinstance(loss, torch.Tensor) and loss.requires_grad
    grads = torch.autograd.grad(loss, params, allow_unused=True) if graph else [None] * len(params)
    out[f"loss{{i}}"] = torch.as_tensor(loss).detach()
    out[f"grad{{i}}"] = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])
    out[f"graph{{i}}"] = float(graph)
out["x_after"] = x
return out
'''

EX2 = f'''
import torch, advkit.zoo
from advkit.attacks import pgd
from advkit.defenses import preprocess
from advkit.defenses.transforms import JPEG, BitDepth, GaussianBlur
x = torch.from_numpy(inputs["bx"].copy()); y = torch.from_numpy(inputs["by"].copy())
w = torch.from_numpy(inputs["bw"].copy())
out = {{}}
for i, t in enumerate([{", ".join(TRANSFORMS)}]):
    xr = x.clone().requires_grad_(True)
    o = my_bpda(t, xr)
    g = torch.autograd.grad((w * o).sum(), xr, allow_unused=True)[0] if o.requires_grad else None
    out[f"v{{i}}"] = o
    out[f"g{{i}}"] = torch.zeros_like(x) if g is None else g
lenet = advkit.zoo.load("lenet5", device="cpu", progress=False).eval()
squeeze = BitDepth(bits=2)
eps = {PGD_EPS!r}
out["adv"] = pgd(preprocess(lenet, lambda z: my_bpda(squeeze, z)), x, y, eps=eps, eps_step=eps / 8, max_iter=20).x_adv
out["x_after"] = x
return out
'''


def grade_ex1(got, inp):
    import torch
    from torch.nn import functional as F

    from advkit.defenses.training import training_perturbation

    if not unchanged(got, "x_after", inp["fx"]):
        return 0.0, "your function modified its input x"
    net = make_net(inp)
    params = list(net.parameters())
    x, y = torch.from_numpy(inp["fx"]), torch.from_numpy(inp["fy"])
    score, msgs = 0.0, []
    for i, (eps, alpha) in enumerate(CASES):
        what = f"ε={eps:g}, α={alpha:g}"
        x_adv = training_perturbation(net, x, y, eps=eps, step_size=eps, steps=1, random_start=False)
        ref = alpha * F.cross_entropy(net(x), y) + (1 - alpha) * F.cross_entropy(net(x_adv), y)
        ref_grad = torch.cat([g.flatten() for g in torch.autograd.grad(ref, params)]).numpy().astype(np.float64)
        ref = ref.item()
        try:
            loss = fetch(got, f"loss{i}", ())
            grad = fetch(got, f"grad{i}", ref_grad.shape)
        except ValueError as err:
            msgs.append(f"{what}: return the loss as a scalar tensor ({err})")
            continue
        if float(fetch(got, f"graph{i}", ())) == 0.0:
            msgs.append(f"{what}: the loss has no graph to the model's parameters (do not detach the loss itself)")
            continue
        if not abs(float(loss) - ref) <= 1e-5 * max(1.0, abs(ref)):
            msgs.append(f"{what}: loss {float(loss):.6f}, expected {ref:.6f}")
            continue
        worst = np.abs(grad - ref_grad).max() if np.isfinite(grad).all() else np.inf
        if worst <= 1e-5 * max(1.0, np.abs(ref_grad).max()):
            score += 0.25
        else:
            msgs.append(f"{what}: the loss is right but its parameter gradients differ by up to {worst:.1e} "
                        "(detach the adversarial point: the attack is not differentiated through)")
    return score, "; ".join(msgs) or "correct"


def grade_ex2(got, inp):
    import torch

    from advkit.attacks import pgd
    from advkit.defenses import preprocess
    from advkit.defenses.transforms import BitDepth

    if not unchanged(got, "x_after", inp["bx"]):
        return 0.0, "your function modified its input x"
    x, y, w = torch.from_numpy(inp["bx"]), torch.from_numpy(inp["by"]), inp["bw"].astype(np.float64)
    score, msgs = 0.0, []
    for i, text in enumerate(TRANSFORMS):
        ref = _transform(text)(x).numpy().astype(np.float64)
        try:
            value, grad = fetch(got, f"v{i}", ref.shape), fetch(got, f"g{i}", ref.shape)
        except ValueError as err:
            msgs.append(f"{text}: {err}")
            continue
        off_v = np.abs(value - ref).max() if np.isfinite(value).all() else np.inf
        off_g = np.abs(grad - w).max() if np.isfinite(grad).all() else np.inf
        if not off_v <= 1e-6:
            msgs.append(f"{text}: the value differs from transform(x) by up to {off_v:.2g}")
        elif not off_g <= 1e-5:
            msgs.append(f"{text}: the gradient is not the identity's (d(w·out)/dx must be w; "
                        f"off by up to {off_g:.2g})")
        else:
            score += 0.25
    ref = pgd(preprocess(cached_model("lenet5"), BitDepth(bits=2), bpda=True), x, y, eps=PGD_EPS,
              eps_step=PGD_EPS / 8, max_iter=20).x_adv.numpy().astype(np.float64)
    try:
        bad = mismatch_fraction(fetch(got, "adv", ref.shape), ref, 1e-6)
        if bad <= 1e-3:    # a zero gradient component may flip sign under rounding
            score += 0.25
        else:
            msgs.append(f"PGD through my_bpda: {bad:.2%} of the pixels differ from PGD with the library's BPDA")
    except ValueError as err:
        msgs.append(f"PGD through my_bpda: {err}")
    return score, "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=prepare,
    checks=(
        Check("ex1_my_fgsm_loss", 2, EX1, grade_ex1, cells=("fd979d00",),
              description="the FGSM adversarial-training loss and its parameter gradients, on the grader's network"),
        Check("ex2_my_bpda", 2, EX2, grade_ex2, cells=("69cd7146",),
              description="BPDA's value and identity gradient for three transforms, and PGD through it"),
    ),
    cell_timeout=300,
)
