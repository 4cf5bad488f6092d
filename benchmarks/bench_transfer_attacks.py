"""Benchmark: advkit's universal perturbation and EOT against ART on the same weights and images,
and the time of Papernot et al.'s substitute attack (no peer: ART has no Jacobian augmentation).

* Universal (Moosavi-Dezfooli et al. 2017): LeNet-5, Linf ``xi``, L2 DeepFool steps, ``passes``
  passes over the same ``n`` images, ``delta = 0`` (every pass runs). advkit with the paper's
  sequential loop (``batch_size=1``, last ``v`` as ART) and with its defaults (``batch_size=16``,
  best pass), against ART's ``UniversalPerturbation(attacker="deepfool")`` with DeepFool set
  like advkit's (``max_iter=50``, overshoot ``0.02``, 10 candidate classes), labels = the
  model's predictions (``y=None``, the paper's fooling rate). Fooling rates on the images
  and on 1000 held-out test images.
* EOT (Athalye et al. 2018): LeNet-5 behind a random rotation (±30°; nearest-neighbour
  resampling as ART's rotation, then bilinear, where ART still uses its own). advkit's ``eot`` with
  ``samples`` draws per step against ART's ``ProjectedGradientDescent`` on a
  ``PyTorchClassifier`` whose preprocessing is ``EoTImageRotationPyTorch(nb_samples=samples)``,
  same ``eps``, step and steps (no random start); plain PGD on the randomised model for
  reference. All are scored on the same 32 fresh rotations.
* Substitute (Papernot et al. 2017): 150 seeds, rho=6 (9600 labels) against the Kolter-Madry CNN.

Usage::

    python benchmarks/bench_transfer_attacks.py --n 100 --threads 1 [--substitute]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

import numpy as np
import torch
from torch import nn


def timed(f):
    t0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t0, time.process_time() - c0


def art_classifier(model: nn.Module, **kw):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), **kw)


def bench_universal(model, x, held_out, *, eps: float, passes: int) -> list[dict]:
    from advkit.blackbox.universal import fooling_rate, universal

    y = torch.zeros(len(x), dtype=torch.long)  # unused by the fooling rate
    rows = []
    for name, kw in (("advkit B=1 (paper loop)", dict(batch_size=1, keep_best=False)),
                     ("advkit B=16 (defaults)", dict(batch_size=16, keep_best=True))):
        res, sec, cpu = timed(lambda: universal(model, x, y, eps=eps, delta=0.0, max_passes=passes, progress=False, **kw))
        v = res.extra["perturbation"]
        rows.append(dict(impl=name, seconds=sec, cpu=cpu, fool=fooling_rate(model, v, x),
                         held_out=fooling_rate(model, v, held_out), linf=v.abs().max().item()))
    try:
        from art.attacks.evasion import UniversalPerturbation
    except ImportError:
        return rows
    random.seed(0)  # ART draws its order from Python's global RNG
    attack = UniversalPerturbation(art_classifier(model), attacker="deepfool",
                                   attacker_params={"max_iter": 50, "epsilon": 0.02, "nb_grads": 10, "verbose": False},
                                   delta=0.0, max_iter=passes, eps=eps, norm=np.inf, verbose=False)
    _, sec, cpu = timed(lambda: attack.generate(x.numpy()))
    v = torch.from_numpy(attack.noise).float()
    rows.append(dict(impl="ART UniversalPerturbation", seconds=sec, cpu=cpu, fool=fooling_rate(model, v, x),
                     held_out=fooling_rate(model, v, held_out), linf=v.abs().max().item()))
    return rows


def bench_eot(model, x, y, *, eps: float, steps: int, samples: int, interpolation: str) -> list[dict]:
    from advkit.attacks.pgd import pgd
    from advkit.blackbox.eot import RandomizedModel, eot, random_transform, success_under_transforms

    defended = RandomizedModel(model, random_transform("rotation", angle=30.0, interpolation=interpolation), seed=0)
    step = 2.5 * eps / steps

    def score(x_adv):
        return success_under_transforms(defended, x_adv, y, draws=32, seed=10_000).mean().item()

    rows = []
    res, sec, cpu = timed(lambda: eot(defended, x, y, eps=eps, steps=steps, step_size=step, samples=samples,
                                      fresh_draws=0, progress=False))
    rows.append(dict(impl=f"advkit eot (S={samples})", seconds=sec, cpu=cpu, fresh=score(res.x_adv),
                     linf=(res.x_adv - x).abs().max().item()))
    res, sec, cpu = timed(lambda: pgd(defended, x, y, eps=eps, eps_step=step, max_iter=steps))
    rows.append(dict(impl="advkit pgd (1 draw/step)", seconds=sec, cpu=cpu, fresh=score(res.x_adv),
                     linf=(res.x_adv - x).abs().max().item()))
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.preprocessing.expectation_over_transformation import EoTImageRotationPyTorch
    except ImportError:
        return rows
    np.random.seed(0)  # ART draws its angles from NumPy's global RNG
    clf = art_classifier(model, preprocessing_defences=[
        EoTImageRotationPyTorch(nb_samples=samples, angles=30.0, clip_values=(0.0, 1.0))])
    attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step, max_iter=steps, num_random_init=0,
                                      batch_size=len(x), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, sec, cpu = timed(lambda: attack.generate(x.numpy(), y.numpy()))
    x_adv = torch.from_numpy(out).float()
    rows.append(dict(impl=f"ART PGD + EoT rotation (S={samples})", seconds=sec, cpu=cpu, fresh=score(x_adv),
                     linf=(x_adv - x).abs().max().item()))
    return rows


def bench_substitute(x, y, x_seed) -> list[dict]:
    from advkit import zoo
    from advkit.blackbox.substitute import substitute

    ref = zoo.reference("model_cnn", device="cpu")
    rows = []
    for name, kw in (("LeNet-5, FGSM (the paper's attack)", dict(arch="lenet5", tau=None, epochs=10, batch_size=128,
                                                                 attack="fgsm")),
                     ("small_cnn, tau=3, 5 ep., b. 32, PGD (defaults)", {})):
        res, sec, cpu = timed(lambda: substitute(ref, x, y, x_seed=x_seed, progress=False, **kw))
        rows.append(dict(impl=name, seconds=sec, cpu=cpu, agreement=res.extra["agreement_history"][-1],
                         transfer=res.extra["transfer_rate"][0.3], labels=res.extra["training_queries"],
                         queries=float(res.queries.float().median())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="MNIST test images (default 100)")
    parser.add_argument("--eps", type=float, default=0.3, help="Linf xi of the universal perturbation")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--eot-eps", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--substitute", action="store_true", help="also time the substitute attack (about a minute)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo
    from advkit.blackbox.substitute import seed_set

    model = zoo.load("lenet5", device="cpu", progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n], ys[: args.n]
    print(f"\nUniversal perturbation, LeNet-5, {args.n} MNIST test images, Linf xi={args.eps}, {args.passes} passes, "
          f"torch threads={torch.get_num_threads()}")
    print("| impl | wall s | CPU s | fooling rate (images) | fooling rate (1000 held-out) | ||v||_inf |")
    print("|---|---|---|---|---|---|")
    for r in bench_universal(model, x, xs[5000:6000], eps=args.eps, passes=args.passes):
        print(f"| {r['impl']} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['fool']:.3f} | {r['held_out']:.3f} "
              f"| {r['linf']:.3f} |")
    for interpolation in ("nearest", "bilinear"):
        print(f"\nEOT against a random rotation (±30°, {interpolation} resampling), LeNet-5, {args.n} images, "
              f"Linf eps={args.eot_eps}, {args.steps} steps of {2.5 * args.eot_eps / args.steps:.4f}")
        print("| impl | wall s | CPU s | success over 32 fresh rotations | max linf |")
        print("|---|---|---|---|---|")
        for r in bench_eot(model, x, y, eps=args.eot_eps, steps=args.steps, samples=args.samples,
                           interpolation=interpolation):
            print(f"| {r['impl']} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['fresh']:.3f} | {r['linf']:.3f} |")
    if args.substitute:
        x_seed, _ = seed_set(xs[-1000:], ys[-1000:], n=150, seed=0)
        print(f"\nSubstitute attack (150 seeds, rho=6) on the Kolter-Madry CNN, {args.n} images, eps=0.3")
        print("| substitute | wall s | CPU s | agreement | transfer | training labels | median queries/image |")
        print("|---|---|---|---|---|---|---|")
        for r in bench_substitute(x, y, x_seed):
            print(f"| {r['impl']} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['agreement']:.3f} | {r['transfer']:.3f} "
                  f"| {r['labels']} | {r['queries']:.0f} |")


if __name__ == "__main__":
    main()
