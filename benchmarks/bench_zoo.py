"""Benchmark: advkit's score-based attacks against ART at an equal query budget.

* ZOO (Chen et al., AISec 2017) on the zoo's MNIST ``cnn``: advkit's :func:`~advkit.blackbox.zoo`
  (with and without its 14 x 14 attack space) against ART's ``ZooAttack`` with the same learning
  rate, ``c``, ``B = nb_parallel = 128`` and ``h``. ART spends ``max_iter * (2 * nb_parallel + 1)``
  queries per image plus one final prediction; its ``max_iter`` is the largest that fits the
  budget, and ``use_resize=False`` (ART's resizing works on 32 x 32, larger than a digit).
* The few-pixel attack (Su et al., IEEE TEVC 2019) on the zoo's LeNet-5: advkit's
  :func:`~advkit.blackbox.pixel` (DE/rand/1, population 400) against ART's ``PixelAttack``
  (``th=pixels``, scipy-style DE, population ``400 // (2 + C) * (2 + C) = 399``), both
  ``max_iter`` generations.

ART's queries are counted by a row-counting module around the model, one image per
``generate`` call (ART attacks one image at a time anyway), so per-image counts are exact.
Every implementation runs once, single-threaded; success is rechecked on the returned images.

Usage::

    python benchmarks/bench_zoo.py --n 10 --budget 1500 --pixel-n 10 --pixel-iter 20 --threads 1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from advkit.blackbox import pixel, zoo


class Counting(nn.Module):
    """Counts the rows the model is asked about."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


def _row(attack, impl, seconds, x, y, x_adv, queries, model, norm, cpu=None):
    with torch.no_grad():
        ok = model(x_adv).argmax(1) != y
    dist = (x_adv - x).flatten(1).norm(dim=1) if norm == 2 else (x_adv != x).any(1).flatten(1).sum(1).float()
    return {"attack": attack, "impl": impl, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "success": round(ok.float().mean().item(), 3),
            f"median_l{norm}": round(dist[ok].median().item(), 3) if ok.any() else float("nan"),
            "median_queries": int(torch.as_tensor(queries).float().median().item()),
            "max_queries": int(torch.as_tensor(queries).max().item())}


def _art_per_image(make_attack, counted, x, y):
    x_np, y_np = x.numpy(), y.numpy()
    out, queries = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(x)):
        before = counted.rows
        out.append(make_attack().generate(x_np[i:i + 1], y_np[i:i + 1]))
        queries.append(counted.rows - before)
    return (time.perf_counter() - t0, time.process_time() - c0), torch.from_numpy(np.concatenate(out)), queries


def bench_zoo(model, x, y, *, budget=1500, lr=0.1, c=10.0, B=128, h=1e-4, art=True):
    rows = []
    for name, size in (("advkit (attack_size=14)", 14), ("advkit (full size)", None)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = zoo(model, x, y, max_queries=budget, lr=lr, c=c, coords_per_step=B, h=h, attack_size=size,
                  progress=False)
        rows.append(_row("zoo", name, time.perf_counter() - t0, x, y, res.x_adv, res.queries, model, 2,
                         time.process_time() - c0))
    if art:
        try:
            from art.attacks.evasion import ZooAttack
            from art.estimators.classification import PyTorchClassifier
        except ImportError:
            return rows
        counted = Counting(model).eval()
        clf = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0))
        max_iter = (budget - 1) // (2 * B + 1)
        np.random.seed(0)
        make = lambda: ZooAttack(clf, confidence=0.0, learning_rate=lr, max_iter=max_iter,  # noqa: E731
                                 binary_search_steps=1, initial_const=c, nb_parallel=B, variable_h=h,
                                 use_resize=False, use_importance=False, batch_size=1, verbose=False)
        (sec, cpu), x_art, q = _art_per_image(make, counted, x, y)
        rows.append(_row("zoo", "ART ZooAttack", sec, x, y, x_art, q, model, 2, cpu))
    return rows


def bench_pixel(model, x, y, *, pixels=1, max_iter=20, art=True):
    t0, c0 = time.perf_counter(), time.process_time()
    res = pixel(model, x, y, pixels=pixels, popsize=400, max_iter=max_iter, progress=False)
    rows = [_row(f"pixel ({pixels})", "advkit", time.perf_counter() - t0, x, y, res.x_adv, res.queries, model, 0,
                 time.process_time() - c0)]
    if art:
        try:
            from art.attacks.evasion import PixelAttack
            from art.estimators.classification import PyTorchClassifier
        except ImportError:
            return rows
        counted = Counting(model).eval()
        clf = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0))
        np.random.seed(0)
        make = lambda: PixelAttack(clf, th=pixels, es=1, max_iter=max_iter,  # noqa: E731
                                   targeted=False, verbose=False)
        (sec, cpu), x_art, q = _art_per_image(make, counted, x, y)
        rows.append(_row(f"pixel ({pixels})", "ART PixelAttack", sec, x, y, x_art.float(), q, model, 0, cpu))
    return rows


def table(rows):
    lines = ["| attack | impl | wall s | cpu s | wall ratio vs advkit | success | median dist | median queries "
             "| max queries |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {}
    for r in rows:
        base.setdefault(r["attack"], r["seconds"])
        dist = r.get("median_l2", r.get("median_l0"))
        kind = "L2" if "median_l2" in r else "L0"
        lines.append(f"| {r['attack']} | {r['impl']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{r['seconds'] / base[r['attack']]:.2f} | "
                     f"{r['success']:.2f} | {dist:.3f} ({kind}) | {r['median_queries']} | {r['max_queries']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="MNIST test images for ZOO (default 10)")
    parser.add_argument("--budget", type=int, default=1500, help="ZOO queries per image (default 1500)")
    parser.add_argument("--pixel-n", type=int, default=10, help="images for the pixel attack (default 10)")
    parser.add_argument("--pixel-offset", type=int, default=60, help="first test image of the pixel run (default 60)")
    parser.add_argument("--pixels", type=int, default=1)
    parser.add_argument("--pixel-iter", type=int, default=20, help="DE generations (default 20; the paper's 100)")
    parser.add_argument("--no-art", action="store_true")
    parser.add_argument("--only", choices=("zoo", "pixel"), default=None, help="run one of the two benchmarks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from advkit import data
    from advkit import zoo as model_zoo

    xs, ys = data.mnist("test").tensors
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sl = slice(args.pixel_offset, args.pixel_offset + args.pixel_n)
        if args.only != "pixel":
            cnn = model_zoo.load("cnn", device="cpu", progress=False)
            rows += bench_zoo(cnn, xs[: args.n], ys[: args.n], budget=args.budget, art=not args.no_art)
        if args.only != "zoo":
            lenet = model_zoo.load("lenet5", device="cpu", progress=False)
            rows += bench_pixel(lenet, xs[sl], ys[sl], pixels=args.pixels, max_iter=args.pixel_iter,
                                art=not args.no_art)
    print(f"ZOO: zoo 'cnn', MNIST test[:{args.n}], {args.budget} queries/image, lr=0.1, c=10, B=128, h=1e-4. "
          f"Pixel: zoo 'lenet5', MNIST test[{sl.start}:{sl.stop}], {args.pixels} pixel(s), population 400 (ART 399), "
          f"{args.pixel_iter} generations. torch threads={torch.get_num_threads()}, one run each.")
    print(table(rows))


if __name__ == "__main__":
    main()
