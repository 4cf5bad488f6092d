"""Benchmark: advkit's input transformations and BPDA-PGD against ART's preprocessors, and the audit's cost.

1. Transforms: advkit (torch, batched) and ART 1.20.1 (``FeatureSqueezing``, ``SpatialSmoothing``,
   ``JpegCompression``) on the same MNIST test images; ``max |diff|`` checks they compute the same.
2. BPDA-PGD: advkit's ``pgd`` on ``preprocess(lenet, t, bpda=True)`` and ART's
   ``ProjectedGradientDescent`` on a ``PyTorchClassifier`` with the same preprocessing defense
   (ART back-propagates through it with ``estimate_gradient``: the identity, i.e. BPDA). Same
   weights, images, eps, step and 20 steps from ``x``, whole batch at once.
3. ``advkit.evaluation.audit`` with its default battery on LeNet-5 (no ART counterpart).

Timed round-robin (one repeat of each implementation in turn), median of ``repeats``.

Usage::

    python benchmarks/bench_defenses.py --n 500 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn


def _time(fns: dict, repeats: int) -> tuple[dict, dict]:
    times = {k: [] for k in fns}
    out = {}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            out[k] = f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, out


def bench_transforms(x: torch.Tensor, repeats: int) -> list[dict]:
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

    from advkit.defenses import transforms as T

    xn = x.numpy()
    cases = {
        "bit depth 1": (T.BitDepth(1), FeatureSqueezing(clip_values=(0, 1), bit_depth=1)),
        "bit depth 2": (T.BitDepth(2), FeatureSqueezing(clip_values=(0, 1), bit_depth=2)),
        "median 2x2": (T.MedianSmoothing(2), SpatialSmoothing(window_size=2, channels_first=True)),
        "median 3x3": (T.MedianSmoothing(3), SpatialSmoothing(window_size=3, channels_first=True)),
        "JPEG q75": (T.JPEG(75), JpegCompression(clip_values=(0, 1), quality=75, channels_first=True)),
    }
    rows = []
    for name, (ours, art) in cases.items():
        sec, out = _time({"advkit": lambda: ours(x).numpy(), "art": lambda: art(xn)[0]}, repeats)
        rows.append({"what": name, "advkit_s": sec["advkit"], "art_s": sec["art"],
                     "ratio": sec["advkit"] / sec["art"], "max_diff": float(np.abs(out["advkit"] - out["art"]).max())})
    tvm = T.TVM()
    sec, _ = _time({"advkit": lambda: tvm(x)}, repeats)
    rows.append({"what": "TVM (ours only)", "advkit_s": sec["advkit"], "art_s": float("nan"), "ratio": float("nan"),
                 "max_diff": float("nan")})
    return rows


def bench_bpda_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[dict]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.preprocessor import JpegCompression, SpatialSmoothing
    from art.estimators.classification import PyTorchClassifier

    from advkit.attacks import pgd
    from advkit.defenses import preprocess
    from advkit.defenses import transforms as T

    rows = []
    cases = {
        "median 2x2, eps 0.1": (T.MedianSmoothing(2), SpatialSmoothing(window_size=2, channels_first=True,
                                                                     clip_values=(0, 1)), 0.1),
        "JPEG q75, eps 0.15": (T.JPEG(75), JpegCompression(clip_values=(0, 1), quality=75, channels_first=True), 0.15),
    }
    xn, yn = x.numpy(), y.numpy()
    for name, (ours_t, art_t, eps) in cases.items():
        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0, 1), preprocessing_defences=[art_t])
        adaptive = preprocess(model, ours_t, bpda=True)

        def run_art():
            return ProjectedGradientDescent(clf, eps=eps, eps_step=eps / 8, max_iter=20, num_random_init=0,
                                            batch_size=len(xn), verbose=False).generate(xn, yn)

        def run_ours():
            return pgd(adaptive, x, y, eps=eps, eps_step=eps / 8, max_iter=20).x_adv

        sec, out = _time({"advkit": run_ours, "art": run_art}, repeats)
        with torch.no_grad():
            acc_ours = (adaptive(out["advkit"]).argmax(1) == y).float().mean().item()
        acc_art = float((clf.predict(out["art"]).argmax(1) == yn).mean())
        rows.append({"what": f"BPDA-PGD-20, {name}", "advkit_s": sec["advkit"], "art_s": sec["art"],
                     "ratio": sec["advkit"] / sec["art"], "acc_advkit": acc_ours, "acc_art": acc_art})
    return rows


def bench_audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    from advkit.defenses import StaircaseModel
    from advkit.evaluation import audit

    rows = []
    for name, m, eps in (("LeNet-5", model, 0.1), ("LeNet-5", model, 0.3), ("StaircaseModel(LeNet-5)",
                                                                            StaircaseModel(model), 0.3)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = audit(m, x, y, eps=eps, progress=False)
        rows.append({"what": f"audit({name}, eps={eps}), n={rep.n}", "seconds": time.perf_counter() - t0,
                     "flags": ", ".join(rep.flags) or "none"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="MNIST test images for sections 1 and 2 (default 500)")
    parser.add_argument("--audit-n", type=int, default=100, help="images for the audit (default 100, its default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo

    model = zoo.load("lenet5", device="cpu", progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n], ys[: args.n]
    print(f"LeNet-5, MNIST test images, CPU, torch threads={torch.get_num_threads()}, median of {args.repeats}\n")
    print(f"### Transforms on {len(x)} images\n")
    print("| transform | advkit (s) | ART (s) | advkit / ART | max abs diff |\n|---|---|---|---|---|")
    for r in bench_transforms(x, args.repeats):
        print(f"| {r['what']} | {r['advkit_s']:.4f} | {r['art_s']:.4f} | {r['ratio']:.2f} | {r['max_diff']:.2g} |")
    print(f"\n### BPDA-PGD through the defense, {len(x)} images\n")
    print("| attack | advkit (s) | ART (s) | advkit / ART | robust acc advkit | robust acc ART |")
    print("|---|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in bench_bpda_pgd(model, x, y, args.repeats):
            print(f"| {r['what']} | {r['advkit_s']:.3f} | {r['art_s']:.3f} | {r['ratio']:.2f} | "
                  f"{r['acc_advkit']:.3f} | {r['acc_art']:.3f} |")
    print("\n### audit, default battery (PGD-20, PGD-100 + 1 restart, Square-500, PGD-20 at eps 0.5)\n")
    print("| audit | seconds | flags |\n|---|---|---|")
    for r in bench_audit(model, xs[: args.audit_n], ys[: args.audit_n]):
        print(f"| {r['what']} | {r['seconds']:.1f} | {r['flags']} |")


if __name__ == "__main__":
    main()
