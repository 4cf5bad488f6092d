"""DeepFool (L2): advkit vs a plain PyTorch loop vs Foolbox 3 vs ART, on the same weights and images.

All run with the authors' settings: 50 steps, the 10 top classes as candidates, overshoot 0.02.

* ``advkit``: :func:`advkit.attacks.deepfool.deepfool` (per-sample stopping: only the samples
  still classified as ``y`` are forwarded and differentiated).
* ``plain loop``: a minimal batched DeepFool *without* per-sample stopping: every step forwards
  and differentiates the whole batch until all samples are adversarial (what Foolbox does).
* ``foolbox``: ``fb.attacks.L2DeepFoolAttack`` (one forward + backward per candidate and step).
* ``art``: ``art.attacks.evasion.DeepFool`` on a capped number of images (it recomputes every
  class gradient of the whole batch at every step, and applies the overshoot once at the end).
* ``advkit [vmap]`` / ``advkit [grads_batched]``: advkit with the Jacobian rows computed by
  ``vmap(jacrev(...))`` or ``autograd.grad(..., is_grads_batched=True)`` instead of one backward
  per candidate, to justify that choice.

``passes`` counts per-sample forward and backward passes through the model (a backward through
the logits of a batch of ``n`` counts ``n``), counted by a thin wrapper around the model during the
timed runs (its overhead is one Python call and one hook per pass); not reported for the two
Jacobian variants, which make advkit's passes batched differently.

Usage: ``python benchmarks/bench_deepfool.py --n 500 --repeats 3``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from advkit.attacks import deepfool as deepfool_module
from advkit.attacks.deepfool import deepfool

STEPS, CANDIDATES, OVERSHOOT = 50, 10, 0.02


class Counted(nn.Module):
    """Counts the samples that go through ``model`` forward and backward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.forward_rows, self.backward_rows = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forward_rows += len(x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += len(grad)


def plain_deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = STEPS,
                   candidates: int = CANDIDATES, overshoot: float = OVERSHOOT) -> torch.Tensor:
    """The textbook batched DeepFool loop, no per-sample stopping (the baseline)."""
    x0 = x.detach()
    with torch.no_grad():
        logits = model(x0)
    classes = logits.scatter(1, y[:, None], float("inf")).argsort(1, descending=True)[:, :candidates]
    r_tot, x_adv = torch.zeros_like(x0), x0.clone()
    for _ in range(steps):
        xg = x_adv.requires_grad_(True)
        z = model(xg)
        done = z.argmax(1) != y
        if done.all():
            break
        f = z.gather(1, classes[:, 1:]) - z.gather(1, classes[:, :1])
        w = torch.stack([torch.autograd.grad(f[:, k].sum(), xg, retain_graph=k < candidates - 2)[0]
                         for k in range(candidates - 1)], 1).flatten(2)
        f = f.detach()
        dist = f.abs() / (w.norm(dim=2) + 1e-8)
        l = dist.argmin(1)
        rows = torch.arange(len(x0))
        w_l = w[rows, l]
        r_i = ((dist[rows, l] + 1e-4) / (w_l.norm(dim=1) + 1e-8))[:, None] * w_l
        r_tot = r_tot + torch.where(done[:, None], 0.0, r_i).view_as(x0)
        x_adv = (x0 + (1 + overshoot) * r_tot).clamp(0, 1).detach()
    return x_adv.detach()


def _vmap_rows(model: nn.Module, x: torch.Tensor, classes: torch.Tensor):
    from torch.func import jacrev, vmap

    def gaps(xi, ci):
        z = model(xi.unsqueeze(0)).squeeze(0)
        f = z.gather(0, ci[1:]) - z.gather(0, ci[:1])
        return f, f

    w, f = vmap(jacrev(gaps, has_aux=True))(x.detach(), classes)
    return f.detach(), w.detach().flatten(2)


def _grads_batched_rows(model: nn.Module, x: torch.Tensor, classes: torch.Tensor):
    xa = x.detach().requires_grad_(True)
    z = model(xa)
    f = z.gather(1, classes[:, 1:]) - z.gather(1, classes[:, :1])
    k, rows = f.shape[1], torch.arange(len(x), device=x.device)
    seeds = torch.zeros(k, *z.shape, device=x.device)
    for j in range(k):
        seeds[j, rows, classes[:, j + 1]] += 1
        seeds[j, rows, classes[:, 0]] -= 1
    (g,) = torch.autograd.grad(z, xa, grad_outputs=seeds, is_grads_batched=True)
    return f.detach(), g.transpose(0, 1).flatten(2)


def _with_rows(fn: Callable) -> Callable:
    def attack(model, x, y):
        original = deepfool_module.logit_gaps_and_gradients
        deepfool_module.logit_gaps_and_gradients = fn
        try:
            return deepfool(model, x, y).x_adv
        finally:
            deepfool_module.logit_gaps_and_gradients = original
    return attack


def _foolbox(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import foolbox as fb

    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=CANDIDATES, overshoot=OVERSHOOT)
    return attack.run(fb.PyTorchModel(model, bounds=(0, 1), device=x.device), x, y)


def _art(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu")
    art = DeepFool(clf, max_iter=STEPS, epsilon=OVERSHOOT, nb_grads=CANDIDATES, batch_size=len(x), verbose=False)
    return torch.from_numpy(art.generate(x.cpu().numpy())).to(x.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable, model: Counted, x, y, repeats: int) -> tuple[list[float], torch.Tensor, int]:
    """Median-able times of ``repeats`` runs after a warm-up, the last output, and its pass count."""
    fn(model, x[:4], y[:4])  # warm-up
    times, out = [], None
    for _ in range(repeats):
        model.forward_rows = model.backward_rows = 0
        _sync(x.device)
        start = time.perf_counter()
        out = fn(model, x, y)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    return times, out, model.forward_rows + model.backward_rows


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 3, art_n: int = 50,
        include: tuple[str, ...] = ("advkit", "plain loop", "foolbox", "art", "advkit [vmap]",
                                    "advkit [grads_batched]")) -> list[dict]:
    """Time each implementation on ``(x, y)`` (ART on the first ``art_n`` images, once) and report
    seconds (median of ``repeats``), per-sample passes, success rate and median L2 of successes."""
    impls: dict[str, Callable] = {
        "advkit": lambda m, a, b: deepfool(m, a, b).x_adv,
        "plain loop": plain_deepfool,
        "foolbox": _foolbox,
        "art": _art,
        "advkit [vmap]": _with_rows(_vmap_rows),
        "advkit [grads_batched]": _with_rows(_grads_batched_rows),
    }
    rows, counted = [], Counted(model).eval()
    for name in include:
        fn = impls[name]
        xs, ys, reps = (x[:art_n], y[:art_n], 1) if name == "art" else (x, y, repeats)
        times, x_adv, passes = _time(fn, counted, xs, ys, reps)
        if name.startswith("advkit ["):
            passes = None  # these variants make advkit's passes, batched differently (vmap)
        with torch.no_grad():
            success = model(x_adv).argmax(1) != ys
        norms = (x_adv - xs).flatten(1).norm(dim=1)
        rows.append({
            "attack": "deepfool-l2", "impl": name, "n": len(xs), "seconds": round(statistics.median(times), 3),
            "seconds_per_100": round(100 * statistics.median(times) / len(xs), 3),
            "passes": passes,
            "success": round(success.float().mean().item(), 4),
            "median_l2": round(norms[success].median().item(), 4) if success.any() else float("nan"),
        })
    plain = next((r for r in rows if r["impl"] == "plain loop"), None)
    for r in rows:
        r["ratio_vs_plain"] = round(r["seconds_per_100"] / plain["seconds_per_100"], 2) if plain else float("nan")
    return rows


def main() -> None:
    from advkit import zoo
    from advkit.data import mnist

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="images (first n of the MNIST test set)")
    parser.add_argument("--art-n", type=int, default=50, help="images for ART (slow), timed once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = zoo.load("lenet5", device=device, progress=False)
    x, y = mnist("test").tensors
    x, y = x[: args.n].to(device), y[: args.n].to(device)
    rows = run(model, x, y, repeats=args.repeats, art_n=args.art_n)
    cols = list(rows[0])
    print(f"DeepFool L2 on LeNet-5, {args.n} MNIST test images, {device}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats} (ART: 1 run)")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
