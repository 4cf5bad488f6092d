"""Grading spec of lab 05 (black-box attacks): exercises 1 and 2, judged outside the student's kernel.

Both exercises run on a small smooth network the grader draws (784-32-10 with a tanh layer and a
dropout layer, in float64, like the lab's ``smooth`` model of section 4): its weights travel as
plain arrays, the kernel rebuilds it, and the grader rebuilds the same network in its own
process for the references.
Exercise 1: the student's ``my_augmentation`` on MNIST test digits and on noisy copies, with
labels the grader draws and lambda = +-0.1, against ``jacobian_augmentation`` imported here; once
more with the network left in training mode (the exercise says to put it in eval mode: dropout
would otherwise change the gradient).
Exercise 2: the student's ``my_fd_gradient`` through a score ``Oracle`` on the network, at
coordinates h <= x_i <= 1 - h: at h = 1e-2 against ``fd_gradient`` (the same formula) and at
h = 1e-4 against the gradient of the margin computed with autograd here, both to a relative 1e-6
(the lab's tolerance), and exactly 2B queries per image.
"""

import numpy as np

from advkit.grading.spec import Check, Spec, cached_model, fetch, mismatch_fraction, unchanged

LAMBDAS = (0.1, -0.1)
HS = (1e-2, 1e-4)
B = 16

NET = '''
def make_net(inputs):
    import torch
    from torch import nn
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 10)).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(inputs["net_" + name.replace(".", "_")].copy()))
    return net.eval()
'''


def prepare():
    """Train or load the lab's zoo models outside the sandbox, where the model cache is read-only."""
    for name in ("lenet5", "fc500_150_10", "cnn"):
        cached_model(name)


def make_net(inp):
    ns = {}
    exec(NET, ns)
    return ns["make_net"](inp)


def _logits(inp, x):
    h = np.tanh(x.reshape(len(x), -1) @ inp["net_1_weight"].T + inp["net_1_bias"])
    return h @ inp["net_4_weight"].T + inp["net_4_bias"]


def inputs(rng):
    import advkit.data

    x_all, _ = advkit.data.mnist("test").tensors
    x_all = x_all.numpy().astype(np.float64)
    out = {"net_1_weight": rng.normal(size=(32, 784)) * 0.1, "net_1_bias": rng.normal(size=32) * 0.5,
           "net_4_weight": rng.normal(size=(10, 32)), "net_4_bias": rng.normal(size=10) * 0.5}
    idx = np.sort(rng.choice(len(x_all), size=40, replace=False))
    x = x_all[idx]
    out["ax"] = x
    out["ax_noisy"] = np.clip(x + rng.uniform(-0.3, 0.3, size=x.shape), 0, 1)
    out["alabels"] = rng.integers(0, 10, size=len(x)).astype(np.int64)
    # exercise 2: digits the network classifies with a margin, and B coordinates inside [h, 1 - h]
    cand = x_all[np.sort(rng.choice(len(x_all), size=200, replace=False))]
    z = _logits(out, cand)
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    top2 = np.sort(logp, 1)[:, -2:]
    flat = cand.reshape(len(cand), -1)
    interior = (flat >= max(HS)) & (flat <= 1 - max(HS))
    ok = np.nonzero((top2[:, 1] - top2[:, 0] >= 0.1) & (interior.sum(1) >= B))[0][:8]
    out["fx"] = cand[ok]
    out["fy"] = z[ok].argmax(1).astype(np.int64)
    out["fcoords"] = np.stack([np.sort(rng.choice(np.nonzero(interior[i])[0], size=B, replace=False))
                               for i in ok]).astype(np.int64)
    return out


EX1 = NET + f'''
import torch
net = make_net(inputs)
labels = torch.from_numpy(inputs["alabels"].copy())
out = {{}}
for name in ("ax", "ax_noisy"):
    x = torch.from_numpy(inputs[name].copy())
    for i, lam in enumerate({LAMBDAS!r}):
        mine = my_augmentation(net, x, labels, lam)
        out[f"{{name}}{{i}}"] = mine
        out[f"{{name}}{{i}}_grad"] = float(bool(getattr(mine, "requires_grad", False)))
    out[name + "_after"] = x
net.train()                     # the student's function must put the network in eval mode itself
out["train"] = my_augmentation(net, torch.from_numpy(inputs["ax"].copy()), labels, {LAMBDAS[0]!r})
return out
'''

EX2 = NET + f'''
import torch
from advkit.blackbox import Oracle
net = make_net(inputs)
x = torch.from_numpy(inputs["fx"].copy()); y = torch.from_numpy(inputs["fy"].copy())
coords = torch.from_numpy(inputs["fcoords"].copy())
out = {{}}
for i, h in enumerate({HS!r}):
    oracle = Oracle(net, "scores", n=len(x))
    out[f"g{{i}}"] = my_fd_gradient(oracle, x, y, coords, h)
    out[f"q{{i}}"] = oracle.queries
out["x_after"] = x
return out
'''


def grade_ex1(got, inp):
    import torch

    from advkit.blackbox.substitute import jacobian_augmentation

    net = make_net(inp)
    labels = torch.from_numpy(inp["alabels"])
    score, msgs = 0.0, []
    for name in ("ax", "ax_noisy"):
        if not unchanged(got, name + "_after", inp[name]):
            return 0.0, "your function modified its input x"
    for name in ("ax", "ax_noisy"):
        x = torch.from_numpy(inp[name])
        for i, lam in enumerate(LAMBDAS):
            ref = jacobian_augmentation(net, x, labels, lam).numpy()
            what = f"{'digits' if name == 'ax' else 'noisy digits'}, λ={lam:g}"
            try:
                mine = fetch(got, f"{name}{i}", ref.shape)
            except ValueError as err:
                msgs.append(f"{what}: {err}")
                continue
            bad = mismatch_fraction(mine, ref, 1e-9)
            if float(fetch(got, f"{name}{i}_grad", ())) != 0.0:
                msgs.append("return a tensor without gradient (.detach())")
            elif bad <= 1e-4:
                score += 0.2
            else:
                msgs.append(f"{what}: {bad:.2%} of the pixels differ from jacobian_augmentation")
    ref = jacobian_augmentation(net, torch.from_numpy(inp["ax"]), labels, LAMBDAS[0]).numpy()
    try:
        bad = mismatch_fraction(fetch(got, "train", ref.shape), ref, 1e-9)
        if bad <= 1e-4:
            score += 0.2
        else:
            msgs.append(f"with the network in training mode {bad:.2%} of the pixels differ: put the net in eval mode")
    except ValueError as err:
        msgs.append(f"network in training mode: {err}")
    return score, "; ".join(msgs) or "correct"


def _margin_gradient(inp):
    import torch

    from advkit.blackbox import margin_from_scores

    net = make_net(inp)
    x = torch.from_numpy(inp["fx"]).requires_grad_(True)
    (g,) = torch.autograd.grad(margin_from_scores(net(x).softmax(1), torch.from_numpy(inp["fy"])).sum(), x)
    return g.flatten(1).gather(1, torch.from_numpy(inp["fcoords"])).numpy()


def grade_ex2(got, inp):
    import torch

    from advkit.blackbox import fd_gradient

    x = torch.from_numpy(inp["fx"])
    if not unchanged(got, "x_after", inp["fx"]):
        return 0.0, "your function modified its input x"
    y, coords = torch.from_numpy(inp["fy"]), torch.from_numpy(inp["fcoords"])
    refs = (fd_gradient(make_net(inp), x, y, coords, h=HS[0]).numpy(), _margin_gradient(inp))
    score, msgs = 0.0, []
    for i, (h, ref) in enumerate(zip(HS, refs)):
        against = "fd_gradient" if i == 0 else "the autograd gradient"
        try:
            mine = fetch(got, f"g{i}", ref.shape)
            queries = fetch(got, f"q{i}", (len(x),))
        except ValueError as err:
            msgs.append(f"h = {h:g}: {err}")
            continue
        if not (queries == 2 * B).all():
            msgs.append(f"h = {h:g}: ask 2B = {2 * B} queries per image, you asked {queries.astype(int).tolist()}")
            continue
        worst = float(np.max(np.abs(mine - ref)) / np.abs(ref).max()) if np.isfinite(mine).all() else np.inf
        if worst < 1e-6:
            score += 0.5
        else:
            msgs.append(f"h = {h:g}: relative error {worst:.1e} against {against} (tolerance 1e-6)")
    return score, "; ".join(msgs) or "correct"


SPEC = Spec(
    inputs=inputs,
    prepare=prepare,
    checks=(
        Check("ex1_my_augmentation", 2, EX1, grade_ex1, cells=("cell-16",),
              description="one Jacobian augmentation round equals jacobian_augmentation on the grader's network"),
        Check("ex2_my_fd_gradient", 2, EX2, grade_ex2, cells=("cell-27",),
              description="the symmetric difference through a score oracle, 2B queries per image"),
    ),
    cell_timeout=300,
)
