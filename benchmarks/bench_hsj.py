"""Benchmark: advkit's decision-based attacks against ART (and Foolbox) at equal query budgets.

HopSkipJump (L2 and Linf): ART 1.20.1's ``HopSkipJump`` does not count queries and is bounded
by iterations, so it runs with the largest ``max_iter`` whose estimated cost fits the budget,
one image per ``generate`` call through a row-counting wrapper (its queries per image are
measured; its final ``compute_success`` query is not charged to it). advkit then gets the
smallest of ART's per-image counts as ``max_queries``: never more queries than ART spent.

Boundary attack (``--boundary``): ART's ``BoundaryAttack`` (``max_iter`` sized to the budget,
per image, counted the same way) and Foolbox 3's reference ``BoundaryAttack`` (whole batch,
``steps`` sized to the budget); advkit's ``boundary`` gets the smallest per-image count of the two.

One run each (these attacks are long; the distortion medians, not the times, are the point);
wall time and process CPU time are both printed. The model, images and budget are the same
for all.

Usage::

    python benchmarks/bench_hsj.py --n 20 --max-queries 1000 --threads 1 [--boundary] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from advkit.blackbox.decision import boundary, hop_skip_jump


class Counting(nn.Module):
    """Counts the rows the wrapped model receives; casts ART's float64 interpolations to float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x.float())


def _timed(f):
    t0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _row(attack, impl, norm, x_adv, x, y, model, queries, wall, cpu):
    with torch.no_grad():
        success = (model(x_adv).argmax(1) != y)
    d = (x_adv - x).flatten(1).norm(p=norm, dim=1)[success]
    return {"attack": attack, "impl": impl, "norm": "inf" if norm == math.inf else "2", "seconds": wall,
            "cpu_seconds": cpu, "success": success.float().mean().item(),
            "median_dist": d.median().item() if len(d) else float("nan"),
            "median_queries": float(statistics.median(queries)), "max_queries": int(max(queries))}


def art_classifier(model: nn.Module, x: torch.Tensor):
    from art.estimators.classification import PyTorchClassifier

    counted = Counting(model).eval()
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    clf = PyTorchClassifier(counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=k,
                            clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu")
    return counted, clf


def art_per_image(counted: Counting, make_attack, x: torch.Tensor):
    """Run an ART attack image by image; returns (x_adv, queries per image)."""
    advs, queries = [], []
    for i in range(len(x)):
        attack = make_attack()
        counted.rows = 0
        advs.append(attack.generate(x[i:i + 1].cpu().numpy()))
        queries.append(counted.rows - 1)  # ART's closing compute_success is not part of the attack
    return torch.from_numpy(np.concatenate(advs)).to(x.device), queries


def art_hsj_iterations(budget: int, norm: float, d: int, init_eval: int = 100) -> int:
    """The largest ART ``max_iter`` whose cost (clean query, one noise draw, 10-step start search,
    then per iteration a binary search, ``int(init_eval sqrt(t+1))`` probes, one step query) fits."""
    theta = 0.01 / math.sqrt(d) if norm == 2 else 0.01 / d
    search = math.ceil(math.log2(1 / theta))
    cost, k = 12, 0
    while cost + search + int(init_eval * math.sqrt(k + 1)) + 1 <= budget:
        cost += search + int(init_eval * math.sqrt(k + 1)) + 1
        k += 1
    return max(k, 1)


def run_hsj(model, x, y, budget: int, seed: int = 0) -> list[dict]:
    from art.attacks.evasion import HopSkipJump

    rows = []
    counted, clf = art_classifier(model, x)
    for norm in (2, math.inf):
        k = art_hsj_iterations(budget, norm, x[0].numel())
        np.random.seed(seed)
        (art_adv, art_q), wall, cpu = _timed(lambda: art_per_image(counted, lambda: HopSkipJump(
            clf, norm=2 if norm == 2 else np.inf, max_iter=k, max_eval=10000, init_eval=100, init_size=100,
            batch_size=4096, verbose=False), x))
        art = _row("hsj", f"ART (max_iter={k})", norm, art_adv, x, y, model, art_q, wall, cpu)
        ours_budget = min(art_q)
        res, wall, cpu = _timed(lambda: hop_skip_jump(model, x, y, norm=2 if norm == 2 else "inf",
                                                      max_queries=ours_budget, seed=seed, progress=False))
        ours = _row("hsj", f"advkit (max_queries={ours_budget})", norm, res.x_adv, x, y, model,
                    res.queries.tolist(), wall, cpu)
        for r in (ours, art):
            r["block"] = f"hsj-{ours['norm']}"
        rows += [ours, art]
    return rows


def run_boundary(model, x, y, budget: int, seed: int = 0) -> list[dict]:
    from art.attacks.evasion import BoundaryAttack

    rows, counts = [], []
    counted, clf = art_classifier(model, x)
    k = max(1, budget // 31)  # ART: 20 spherical draws + the source steps of the successful ones
    np.random.seed(seed)
    (art_adv, art_q), wall, cpu = _timed(lambda: art_per_image(counted, lambda: BoundaryAttack(
        clf, targeted=False, max_iter=k, batch_size=4096, verbose=False), x))
    rows.append(_row("boundary", f"ART (max_iter={k})", 2, art_adv, x, y, model, art_q, wall, cpu))
    counts.append(min(art_q))
    try:
        import foolbox as fb

        fcount = Counting(model).eval()
        fmodel = fb.PyTorchModel(fcount, bounds=(0, 1))
        steps = max(1, int((budget - 50) / 1.1))  # 1 query a step, 1 more every 10th; ~50 for the start
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (_, fb_adv, _), wall, cpu = _timed(lambda: fb.attacks.BoundaryAttack(steps=steps)(
                fmodel, x, fb.criteria.Misclassification(y), epsilons=None))
        q = fcount.rows // len(x)
        rows.append(_row("boundary", f"Foolbox (steps={steps})", 2, fb_adv, x, y, model, [q] * len(x), wall, cpu))
        counts.append(q)
    except ImportError:
        pass
    ours_budget = min(counts)
    res, wall, cpu = _timed(lambda: boundary(model, x, y, max_queries=ours_budget, seed=seed, progress=False))
    rows.insert(0, _row("boundary", f"advkit (max_queries={ours_budget})", 2, res.x_adv, x, y, model,
                        res.queries.tolist(), wall, cpu))
    hsj, wall, cpu = _timed(lambda: hop_skip_jump(model, x, y, max_queries=ours_budget, seed=seed, progress=False))
    rows.insert(1, _row("hsj", f"advkit HSJ (max_queries={ours_budget})", 2, hsj.x_adv, x, y, model,
                        hsj.queries.tolist(), wall, cpu))
    for r in rows:
        r["block"] = "boundary"
    return rows


def print_table(rows: list[dict]) -> None:
    """Markdown table; the ratios are to the block's first row (advkit at that budget)."""
    print("| block | attack | norm | impl | wall s | cpu s | success | median dist | median queries | max queries |"
          " dist / advkit | time / advkit |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    first: dict[str, dict] = {}
    for r in rows:
        base = first.setdefault(r["block"], r)
        print(f"| {r['block']} | {r['attack']} | {r['norm']} | {r['impl']} | {r['seconds']:.2f} | "
              f"{r['cpu_seconds']:.2f} | {r['success']:.2f} | {r['median_dist']:.4f} | {r['median_queries']:.0f} | "
              f"{r['max_queries']} | {r['median_dist'] / base['median_dist']:.3f} | "
              f"{r['seconds'] / base['seconds']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="MNIST test images (default 20)")
    parser.add_argument("--max-queries", type=int, default=1000, help="query budget per image (default 1000)")
    parser.add_argument("--boundary", action="store_true", help="also the Boundary attack vs ART and Foolbox")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo

    model = zoo.load("lenet5", device=args.device, progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n].to(args.device), ys[: args.n].to(args.device)
    hop_skip_jump(model, x[:2], y[:2], max_queries=50, progress=False)  # warm-up
    rows = run_hsj(model, x, y, args.max_queries, args.seed)
    if args.boundary:
        rows += run_boundary(model, x, y, args.max_queries, args.seed)
    print(f"Decision-based attacks on LeNet-5, {len(x)} MNIST test images, budget ~{args.max_queries} queries per "
          f"image (advkit gets the peers' smallest per-image count), device={args.device}, "
          f"torch threads={torch.get_num_threads()}, one run")
    print_table(rows)


if __name__ == "__main__":
    main()
