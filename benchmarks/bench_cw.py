"""Carlini-Wagner L2: advkit vs a plain PyTorch loop, Foolbox 3 and ART at an equal budget.

Every implementation runs the same budget (``binary_search_steps`` x ``steps`` Adam steps,
step size, ``initial_const``, confidence 0, untargeted) on the same LeNet-5 weights and images.
Reported per implementation: median seconds over ``repeats`` timed runs (after one warm-up run),
the model's forward calls and forward+backward passes per image, success rate and the median L2
norm of the successes.

* "plain loop": the textbook batched C&W (fresh ``torch.optim.Adam`` per binary-search step, the
  same per-sample binary search, the best adversarial kept) *without* early abort: exactly
  ``binary_search_steps x steps`` forward+backward passes of the whole batch.
* Foolbox returns an all-zero image where it found nothing and its own success flag counts it
  when the blank image is misclassified; here such samples count as failures.
* ART's ``CarliniL2Method`` is a different optimiser (gradient descent with a line search on the
  step: several extra forward passes per iteration, and two ``class_gradient`` calls); it runs
  on at most ``art_n`` images (its default ``batch_size=1`` would take minutes; we pass the
  whole batch), is timed once, and its figures are for that subset (``ratio_vs_plain`` is per
  image).

Run: ``python benchmarks/bench_cw.py --n 100 --repeats 3 [--threads 1]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from torch import nn

from advkit.attacks.cw import cw_l2


class Counting(nn.Module):
    """Wraps a model and counts forward calls and images forwarded (for the "passes" columns)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls, self.images = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += len(x)
        return self.model(x)


def plain_cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, binary_search_steps: int,
             lr: float, initial_const: float) -> torch.Tensor:
    """Textbook batched C&W L2 (no early abort): returns the closest adversarial found (x if none)."""
    n, shape = len(x), (-1,) + (1,) * (x.dim() - 1)
    c = torch.full((n,), initial_const, device=x.device)
    lo, hi = torch.zeros_like(c), torch.full_like(c, 1e10)
    best_l2, best = torch.full_like(c, math.inf), x.clone()
    w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
    for _ in range(binary_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            x_adv = (torch.tanh(w) + 1) / 2
            z = model(x_adv)
            z_y = z.gather(1, y[:, None]).squeeze(1)
            z_other = z.scatter(1, y[:, None], -math.inf).amax(1)
            dist = (x_adv - x).flatten(1).pow(2).sum(1)
            loss = (dist + c * (z_y - z_other).clamp_min(0)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                ok = z_other > z_y
                found |= ok
                better = ok & (dist.sqrt() < best_l2)
                best_l2 = torch.where(better, dist.sqrt(), best_l2)
                best = torch.where(better.view(shape), x_adv.detach(), best)
        hi = torch.where(found, torch.minimum(hi, c), hi)
        lo = torch.where(found, lo, torch.maximum(lo, c))
        c = torch.where(hi < 1e10, (lo + hi) / 2, c * 10)
    return best


def _quality(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> dict:
    with torch.no_grad():
        # an all-zero image is Foolbox's "nothing found"
        ok = (model(x_adv).argmax(1) != y) & (x_adv.flatten(1).abs().amax(1) > 0)
    l2 = (x_adv - x).flatten(1).norm(dim=1)[ok]
    return {"success_rate": round(ok.float().mean().item(), 4),
            "median_l2": round(l2.median().item(), 4) if len(l2) else float("nan")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 3, steps: int = 100,
        binary_search_steps: int = 5, lr: float = 0.1, initial_const: float = 1e-2,
        art_n: int = 20, peers: bool = True) -> list[dict]:
    """Time advkit's ``cw_l2`` against a plain loop and the peers at an equal budget; one row each.

    Each implementation runs once untimed (warm-up; its forward calls are counted then), then the
    timed runs are interleaved (advkit, plain, foolbox, advkit, ...) so that a change in the load
    of a shared machine hits all of them alike. ``seconds`` is the median wall time,
    ``cpu_seconds`` the median CPU time of this process (less sensitive to other processes).
    ART is timed once, on its ``art_n`` images, without warm-up (one run takes minutes).
    """
    device = x.device
    budget = dict(steps=steps, binary_search_steps=binary_search_steps, lr=lr, initial_const=initial_const)
    impls = {}  # name -> (run, counter, images, labels, repeats)

    counter = Counting(model).eval()
    impls["advkit"] = (lambda c=counter: cw_l2(c, x, y, learning_rate=lr, max_iterations=steps,
                                               binary_search_steps=binary_search_steps,
                                               initial_const=initial_const).x_adv, counter, x, y, repeats)
    counter = Counting(model).eval()
    impls["plain loop"] = (lambda c=counter: plain_cw(c, x, y, **budget), counter, x, y, repeats)
    if peers:
        import foolbox as fb
        from art.attacks.evasion import CarliniL2Method
        from art.estimators.classification import PyTorchClassifier

        counter = Counting(model).eval()
        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=binary_search_steps, steps=steps,
                                                  stepsize=lr, confidence=0, initial_const=initial_const)
        fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device=device)
        impls["foolbox"] = (lambda: attack(fmodel, x, y, epsilons=None)[1], counter, x, y, repeats)

        counter = Counting(model).eval()
        clf = PyTorchClassifier(counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=int(model(x[:1]).shape[1]), clip_values=(0.0, 1.0),
                                device_type="gpu" if device.type == "cuda" else "cpu")
        art = CarliniL2Method(clf, confidence=0.0, learning_rate=lr, binary_search_steps=binary_search_steps,
                              max_iter=steps, initial_const=initial_const, batch_size=art_n, verbose=False)
        x_np, y_np = x[:art_n].cpu().numpy(), y[:art_n].cpu().numpy()
        impls["art"] = (lambda: torch.from_numpy(np.asarray(art.generate(x_np, y_np))).to(device),
                        counter, x[:art_n], y[:art_n], 0)

    wall: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    out, counts = {}, {}

    def timed(name: str) -> None:
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        out[name] = impls[name][0]()
        _sync(device)
        wall[name].append(time.perf_counter() - t)
        cpu[name].append(time.process_time() - c)

    for name, (fn, counter, *_rest) in impls.items():  # warm-up, counting the forward passes
        if impls[name][4]:
            out[name] = fn()
        else:
            timed(name)
        counts[name] = (counter.calls, counter.images)
    for _ in range(repeats):
        for name in impls:
            if impls[name][4]:
                timed(name)

    rows = []
    for name, (_, _, xs, ys, _) in impls.items():
        calls, images = counts[name]
        rows.append({"attack": "cw-l2", "impl": name, "n": len(xs),
                     "seconds": round(statistics.median(wall[name]), 3),
                     "cpu_seconds": round(statistics.median(cpu[name]), 3),
                     "forward_calls": calls, "passes_per_image": round(images / len(xs), 1),
                     **_quality(model, xs, ys, out[name]), **budget})
    plain = rows[1]
    for r in rows:  # per image, so that ART's smaller subset compares too
        r["ratio_vs_plain"] = round((r["seconds"] / r["n"]) / (plain["seconds"] / plain["n"]), 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="MNIST test images (correctly classified ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="Adam steps per binary-search step")
    parser.add_argument("--binary-search-steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--initial-const", type=float, default=1e-2)
    parser.add_argument("--art-n", type=int, default=20, help="images for ART (slow); 0 = skip the peers")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()

    from advkit import data, zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = zoo.load("lenet5", device=device, progress=False)
    x, y = data.mnist("test").tensors
    x, y = x[: 2 * args.n].to(device), y[: 2 * args.n].to(device)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][: args.n], y[keep][: args.n]
    rows = run(model, x, y, repeats=args.repeats, steps=args.steps,
               binary_search_steps=args.binary_search_steps, lr=args.lr,
               initial_const=args.initial_const, art_n=args.art_n, peers=args.art_n > 0)
    cols = ["impl", "n", "seconds", "cpu_seconds", "ratio_vs_plain", "forward_calls", "passes_per_image",
            "success_rate", "median_l2"]
    print(f"C&W L2, LeNet-5, {args.binary_search_steps} x {args.steps} steps, lr {args.lr}, "
          f"c0 {args.initial_const}, device {device}, torch threads {torch.get_num_threads()}")
    print(" | ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]!s:>16}" for c in cols))


if __name__ == "__main__":
    main()
