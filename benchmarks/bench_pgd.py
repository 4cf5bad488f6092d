"""Benchmark: advkit's Linf PGD against a hand-written PyTorch loop, Foolbox 3 and ART.

All four run the same attack: ``max_iter`` steps of ``eps_step * sign(grad)`` from ``x`` (no
random start), projected onto the Linf ball of radius ``eps`` and clipped to [0, 1], one
forward and one backward pass per step, on the whole batch at once (ART with
``batch_size = N``). Implementations are timed round-robin (one repeat of each in turn) so
that load from other processes on a shared machine spreads over all of them; the median of
``repeats`` is reported.

Usage::

    python benchmarks/bench_pgd.py --n 500 --repeats 3 [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from advkit.attacks.pgd import pgd


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, eps_step: float,
               max_iter: int) -> torch.Tensor:
    """The textbook Linf PGD loop (Madry et al.), nothing else: the speed to match."""
    x_adv = x.clone()
    for _ in range(max_iter):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + eps_step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def _implementations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, eps_step: float
                     ) -> dict[str, Callable[[int], torch.Tensor]]:
    """name -> function(max_iter) returning x_adv; peers that are not installed are left out."""
    impls: dict[str, Callable[[int], torch.Tensor]] = {
        "advkit": lambda T: pgd(model, x, y, eps=eps, eps_step=eps_step, max_iter=T).x_adv,
        "plain loop": lambda T: plain_loop(model, x, y, eps, eps_step, T),
    }
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))

        def run_foolbox(T: int) -> torch.Tensor:
            attack = fb.attacks.LinfPGD(abs_stepsize=eps_step, steps=T, random_start=False)
            return attack(fmodel, x, y, epsilons=eps)[1]

        impls["foolbox"] = run_foolbox
    except ImportError:
        pass
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        with torch.no_grad():
            nb_classes = model(x[:1]).shape[1]
        clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=nb_classes, clip_values=(0.0, 1.0),
                                device_type="gpu" if x.is_cuda else "cpu")
        x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

        def run_art(T: int) -> torch.Tensor:
            attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps_step, max_iter=T,
                                              num_random_init=0, batch_size=len(x_np), verbose=False)
            return torch.from_numpy(attack.generate(x_np, y_np)).to(x.device)

        impls["art"] = run_art
    except ImportError:
        pass
    return impls


def time_interleaved(impls: dict[str, Callable[[int], torch.Tensor]], max_iter: int, repeats: int,
                     sync: Callable[[], None]) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, torch.Tensor]]:
    """Warm every implementation up (2 steps), then run them in turn ``repeats`` times, so that a
    change of machine load hits all of them alike. Returns wall and CPU seconds per repeat and the
    last ``x_adv``, per implementation."""
    with warnings.catch_warnings():  # warm-up (allocator, oneDNN kernels, CUDA context); 2 steps are "too short"
        warnings.simplefilter("ignore")
        for f in impls.values():
            f(2)
    sync()
    times: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    x_adv: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, f in impls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            x_adv[name] = f(max_iter)
            sync()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return times, cpu, x_adv


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 3, eps: float = 0.1,
        eps_step: float = 0.01, max_iter: int = 40) -> list[dict]:
    """Time each implementation ``repeats`` times (after a 2-step warm-up); one row per implementation.

    Rows: ``attack``, ``impl``, ``seconds`` (median), ``passes`` (forward+backward per sample),
    ``ratio_vs_plain``, ``cpu_seconds`` (median process CPU time: less sensitive than wall time
    to other processes' load), ``robust_accuracy`` and ``max_linf`` (quality checks, outside the
    timing), ``all_seconds`` (every repeat).
    """
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    impls = _implementations(model, x, y, eps, eps_step)
    times, cpu, x_adv = time_interleaved(impls, max_iter, repeats, sync)
    plain = statistics.median(times["plain loop"])
    rows = []
    for name in impls:
        with torch.no_grad():
            acc = (model(x_adv[name]).argmax(1) == y).float().mean().item()
        sec = statistics.median(times[name])
        rows.append({"attack": "pgd-linf", "impl": name, "seconds": round(sec, 3), "passes": max_iter,
                     "ratio_vs_plain": round(sec / plain, 3), "robust_accuracy": round(acc, 4),
                     "max_linf": round((x_adv[name] - x).abs().amax().item(), 5),
                     "cpu_seconds": round(statistics.median(cpu[name]), 3),
                     "all_seconds": [round(t, 3) for t in times[name]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="MNIST test images (default 500)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--eps-step", type=float, default=0.01)
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo

    model = zoo.load("lenet5", device=args.device, progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n].to(args.device), ys[: args.n].to(args.device)
    rows = run(model, x, y, repeats=args.repeats, eps=args.eps, eps_step=args.eps_step, max_iter=args.max_iter)
    print(f"Linf PGD on LeNet-5, {len(x)} MNIST test images, eps={args.eps}, eps_step={args.eps_step}, "
          f"{args.max_iter} steps, device={args.device}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'impl':<12}{'seconds':>9}{'ratio':>8}{'cpu s':>9}{'robust acc':>12}{'max linf':>10}  all runs (s)")
    for r in rows:
        print(f"{r['impl']:<12}{r['seconds']:>9.3f}{r['ratio_vs_plain']:>8.3f}{r['cpu_seconds']:>9.3f}"
              f"{r['robust_accuracy']:>12.3f}{r['max_linf']:>10.4f}  {r['all_seconds']}")


if __name__ == "__main__":
    main()
