"""Benchmark: advkit's Square attack against ART's ``SquareAttack``, Linf and L2, in one run.

Both attack the same model and images with the same per-sample budget of *distinct* points
queried: advkit spends ``max_queries`` = clean query + init + ``max_queries - 2`` candidates;
ART with ``max_iter = max_queries - 2`` evaluates its init and ``max_iter`` candidates (it also
re-queries points it has already seen, about three model rows per sample and iteration, which
is shown separately as "rows/sample"). Both use the paper's schedule, ``p_init`` (0.8 Linf,
0.1 L2) and the margin loss, untargeted, one restart.

ART's per-sample counts are measured, not estimated: an untimed second ART run with the same
seed (the same trajectory) goes through a model wrapper that assigns every row to its nearest
original image (MNIST test images are farther apart than any eps used here) and counts the
distinct rows per image. advkit's counts are its oracle's.

Usage::

    python benchmarks/bench_square.py --n 100 --max-queries 1000 --threads 1
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from advkit.blackbox import square

P = {"inf": float("inf"), "2": 2.0}


class _RowCounter(nn.Module):
    """Forwards to ``model``; counts all rows and the distinct rows of each original image."""

    def __init__(self, model: nn.Module, x: torch.Tensor, p: float):
        super().__init__()
        self.model, self.x, self.p = model, x.flatten(1), p
        self.rows = 0
        self.seen: list[set[bytes]] = [set() for _ in range(len(x))]

    def forward(self, xb):
        self.rows += len(xb)
        flat = xb.detach().flatten(1)
        owner = torch.cdist(flat, self.x, p=self.p).argmin(1) if self.p != float("inf") else \
            (flat[:, None] - self.x[None]).abs().amax(2).argmin(1)
        for row, i in zip(flat, owner.tolist()):
            self.seen[i].add(row.numpy().tobytes())
        return self.model(xb)


def _art(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, max_queries: int,
         p_init: float, seed: int) -> torch.Tensor:
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0))
    np.random.seed(seed)
    random.seed(seed)
    attack = SquareAttack(clf, norm=np.inf if norm == "inf" else 2, max_iter=max_queries - 2, eps=eps, p_init=p_init,
                          nb_restarts=1, batch_size=max(len(x), 1), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ART's L2 step divides by zero-norm windows (RuntimeWarning)
        return torch.from_numpy(attack.generate(x.numpy(), y.numpy()))


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, max_queries: int,
        repeats: int = 1, seed: int = 0) -> list[dict]:
    """Time advkit and ART (after a 3-query warm-up, round-robin, median of ``repeats``); one row each."""
    p = P[norm]
    p_init = 0.8 if norm == "inf" else 0.1
    times: dict[str, list[float]] = {"advkit": [], "art": []}
    out: dict[str, torch.Tensor] = {}
    res = None
    square(model, x, y, eps=eps, norm="inf" if norm == "inf" else 2, max_queries=3, progress=False)  # warm-up
    _art(model, x, y, norm=norm, eps=eps, max_queries=3, p_init=p_init, seed=seed)
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = square(model, x, y, eps=eps, norm="inf" if norm == "inf" else 2, max_queries=max_queries,
                     p_init=p_init, seed=seed, progress=False)
        times["advkit"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out["art"] = _art(model, x, y, norm=norm, eps=eps, max_queries=max_queries, p_init=p_init, seed=seed)
        times["art"].append(time.perf_counter() - t0)
    out["advkit"] = res.x_adv
    counter = _RowCounter(model, x, p).eval()  # untimed: ART's per-image counts, same seed, same run
    x_art_again = _art(counter, x, y, norm=norm, eps=eps, max_queries=max_queries, p_init=p_init, seed=seed)
    assert torch.equal(x_art_again, out["art"]), "ART's second run differs: counts would not match"
    queries = {"advkit": res.queries, "art": torch.tensor([len(s) for s in counter.seen])}
    rows_per_sample = {"advkit": res.queries.sum().item() / len(x), "art": counter.rows / len(x)}
    art_sec = statistics.median(times["art"])
    table = []
    for name in ("advkit", "art"):
        with torch.no_grad():
            ok = model(out[name]).argmax(1) != y
        d = (out[name] - x).flatten(1).norm(p=p, dim=1)
        sec = statistics.median(times[name])
        table.append({"attack": f"square-{'linf' if norm == 'inf' else 'l2'}", "impl": name, "eps": eps,
                      "max_queries": max_queries, "success": round(ok.float().mean().item(), 4),
                      "median_queries": float(queries[name][ok].float().median()) if ok.any() else float("nan"),
                      "mean_queries": round(queries[name].float().mean().item(), 1),
                      "rows_per_sample": round(rows_per_sample[name], 1),
                      "median_dist": round(d[ok].median().item(), 4) if ok.any() else float("nan"),
                      "max_dist": round(d.max().item(), 5), "seconds": round(sec, 3),
                      "ratio_vs_art": round(sec / art_sec, 3), "all_seconds": [round(t, 3) for t in times[name]]})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="MNIST test images (default 100)")
    parser.add_argument("--max-queries", type=int, default=1000, help="per-sample budget (default 1000)")
    parser.add_argument("--eps-inf", type=float, default=0.3)
    parser.add_argument("--eps-2", type=float, default=2.0)
    parser.add_argument("--norms", default="inf,2", help="comma-separated subset of inf,2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo

    model = zoo.load("lenet5", device="cpu", progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n], ys[: args.n]
    rows = []
    for norm in args.norms.split(","):
        eps = args.eps_inf if norm == "inf" else args.eps_2
        rows += run(model, x, y, norm=norm, eps=eps, max_queries=args.max_queries, repeats=args.repeats,
                    seed=args.seed)
    print(f"Square attack on LeNet-5, {len(x)} MNIST test images, max_queries={args.max_queries} "
          f"(ART max_iter={args.max_queries - 2}), seed={args.seed}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats}\n")
    print("| attack | impl | eps | success | median queries (successes) | mean queries | model rows / sample "
          "| median dist (successes) | max dist | wall s | time vs ART |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['attack']} | {r['impl']} | {r['eps']} | {r['success']:.3f} | {r['median_queries']:.0f} | "
              f"{r['mean_queries']:.1f} | {r['rows_per_sample']:.1f} | {r['median_dist']:.4f} | {r['max_dist']:.4f} | "
              f"{r['seconds']:.2f} | {r['ratio_vs_art']:.3f} |")


if __name__ == "__main__":
    main()
