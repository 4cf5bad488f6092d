"""Benchmark: the thesis's PGD timing (ResNet-50, ten images, ART at ``batch_size=1``) against advkit's PGD.

The thesis attacked ten images per data set (one validation image per class) with ART's
``ProjectedGradientDescent`` at its defaults (Linf, ``eps=0.3``, ``eps_step=0.1``,
``max_iter=100``, no random start, untargeted) and ``batch_size=1``, and took 2m14s to 2m38s per
data set on a GTX 1080 (Table 9). This script times, in one run, on the same network
(:func:`advkit.models.resnet50` with ten classes, eval mode) and the same ten images:

- ``advkit``: ``pgd(model, x, y, eps=0.3, eps_step=0.1, max_iter=T, random_start=False)``, the
  whole batch at once;
- ``plain loop``: the textbook loop (``x.requires_grad``, summed cross-entropy, ``autograd.grad``,
  ``x + eps_step * sign(g)``, projection onto the eps-ball, clip to [0, 1]) on the same batch:
  the speed to match;
- ``ART bs=1``: ART's ``ProjectedGradientDescent`` through a ``PyTorchClassifier`` with
  ``clip_values=(0, 1)``, ``batch_size=1`` (the thesis's setting), ``num_random_init=0``;
- ``ART bs=10``: the same with the whole batch at once, for information.

All four take ``T`` steps of one forward and one backward pass each (ART's ``loss.backward()``
also computes the weights' gradients, which the other two skip).

Weights and images. The network has random weights (``torch.manual_seed(seed)``) and the images
are seeded uniform noise of shape ``channels x size x size``; the labels are the network's own
clean predictions, so every image starts "correctly classified" and the attack has a label to
move away from. The attack's work (``T`` forward and backward passes of the same network on
tensors of the same shape) does not depend on the quality of the weights or on the picture, so
the times hold for the fine-tuned model; only the adversarial accuracy would differ. Size 28
with one channel is MNIST's shape (``GrayToRGB`` in front of the network), 160 Imagenette-160's.

Timing. After a 2-step warm-up of each method (allocator, oneDNN / cuDNN kernels, CUDA context),
the methods run round-robin (one repeat of each in turn, so that load from other processes on a
shared machine spreads over all of them) and the median of ``--repeats`` is reported, in wall
seconds and in process CPU seconds (less sensitive to other processes with ``--threads 1``).
With ``--iters`` below 100 the time of 100 iterations is extrapolated linearly (every step costs
the same) for the comparison with the thesis. The two claims checked: advkit at most 1.05
times the plain loop, and at least 3 times faster than ART at ``batch_size=1``. advkit also
validates its input (one forward pass of one image) and judges the final ``x_adv`` (one forward
pass of the batch): a fixed cost that weighs with few steps (16% at 3 steps, 2-5% at 20, none
measurable at 100).

Measured (CPU, 1 torch thread, a shared 2-core machine at a load average of 2-4, median of 3;
the GPU figure is not measured yet)::

    ======================  =====  ===========  ==========  ===========  ============
    images, steps           plain  advkit       ART bs=1    ART bs=10    ART bs=1 /
                            s      (vs plain)   (vs plain)  (vs plain)   advkit
    ======================  =====  ===========  ==========  ===========  ============
    1x28x28, 20 steps       3.4    1.02 - 1.05  4.9 - 5.1   1.6 - 1.7    4.8 - 4.9
    3x64x64, 20 steps       7.1    1.04         3.3         1.5          3.2 (CPU 3.5)
    3x160x160, 8 steps (2)  8.4    1.05         2.2         1.5          2.1
    1x28x28, 100 steps      17.6   1.00         -           -            -
    ======================  =====  ===========  ==========  ===========  ============

(2: median of 2, at a load average of about 2, CPU time = wall time.) ART at ``batch_size=1``
loses to the batched loops through batch-1 passes and its ``loss.backward()``, which also
computes the weights' gradients (ART at ``batch_size=10`` still takes 1.5-1.7 times the plain
loop). On one CPU core the gap narrows as the images grow (batch-1 convolutions of larger
images keep the core as busy as batch 10 does), so the "3 times faster than ART at
``batch_size=1``" holds at 28 and 64 pixels but not at Imagenette's 160 (2.1); a GPU, where
batch 1 leaves most of the device idle, is where the thesis measured. At 100 steps advkit's
extrapolated time at 160 pixels is about 110 s on one CPU core, against the thesis's 134-158 s
on a GTX 1080 with ART at ``batch_size=1`` (the same attack, a different machine: not a ratio).

Agreement (outside the timing): the adversarial accuracy of each method, and how far each
``x_adv`` is from the plain loop's (largest difference, share of pixels differing by more than
1e-6, share of images with the same adversarial label). In float32 the iterates of advkit and
the plain loop agree to 1e-7 for the first ten or so steps, then the sign steps amplify rounding
(a gradient coordinate near 0 changes sign) and some pixels take other paths: measured at size
28, 20 steps, 12% of the pixels differ (by up to 2 * eps), while all ten adversarial labels
agree. ``--check64`` shows that this is rounding: it reruns advkit and the plain loop in float64
(untimed), where they agree to 1e-16, and measures the plain loop's own float32-vs-float64
difference (13% of the pixels in the same setting). ART computes in float32 only.

Usage::

    python benchmarks/bench_thesis_pgd.py --size 28 --channels 1 --iters 20 --repeats 3 --threads 1
    python benchmarks/bench_thesis_pgd.py --size 64 --iters 20 --repeats 3 --threads 1
    python benchmarks/bench_thesis_pgd.py --size 28 --channels 1 --no-art --threads 1   # 100 steps, no ART
    python benchmarks/bench_thesis_pgd.py --size 160 --device cuda        # the thesis's setting, 100 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advkit.attacks.pgd import pgd
from bench_pgd import plain_loop, time_interleaved  # the same textbook loop and timing as bench_pgd.py

#: Table 9 of the thesis: ART's PGD on ten images per data set, batch_size=1, GTX 1080, 100 steps.
THESIS_SECONDS = (134.0, 158.0)
EPS, EPS_STEP, THESIS_ITERS = 0.3, 0.1, 100
MAX_VS_PLAIN, MIN_VS_ART = 1.05, 3.0


def setup(size: int = 64, channels: int = 3, device: str = "cpu", seed: int = 0, n: int = 10
          ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """ResNet-50 (10 classes, seeded random weights, eval mode), ``n`` seeded noise images, their predicted labels."""
    from advkit.models import resnet50

    if size < 1 or channels not in (1, 3) or n < 1:
        raise ValueError(f"need size >= 1, channels 1 or 3 and n >= 1; got size={size}, channels={channels}, n={n}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet50(num_classes=10, in_channels=channels)
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=gen).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _implementations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, eps_step: float,
                     art: bool = True) -> dict[str, Callable[[int], torch.Tensor]]:
    """name -> function(max_iter) returning x_adv; the ART rows are left out if ART is not installed or not ``art``."""
    impls: dict[str, Callable[[int], torch.Tensor]] = {
        "advkit": lambda T: pgd(model, x, y, eps=eps, eps_step=eps_step, max_iter=T, random_start=False).x_adv,
        "plain loop": lambda T: plain_loop(model, x, y, eps, eps_step, T),
    }
    if not art:
        return impls
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return impls
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="gpu" if x.is_cuda else "cpu")
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

    def art(batch_size: int) -> Callable[[int], torch.Tensor]:
        def run_art(T: int) -> torch.Tensor:
            attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps_step, max_iter=T,
                                              num_random_init=0, targeted=False, batch_size=batch_size,
                                              verbose=False)
            return torch.from_numpy(attack.generate(x_np, y_np)).to(x.device)
        return run_art

    impls["ART bs=1"] = art(1)
    impls[f"ART bs={len(x)}"] = art(len(x))
    return impls


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 3, max_iter: int = THESIS_ITERS,
        eps: float = EPS, eps_step: float = EPS_STEP, art: bool = True) -> list[dict]:
    """Time every method ``repeats`` times, round-robin, after a 2-step warm-up; one row per method.

    Rows: ``attack`` (``"pgd-thesis"``), ``impl``, ``seconds`` (median wall), ``cpu_seconds`` (median process CPU time),
    ``seconds_100`` (wall time of 100 steps, extrapolated linearly when ``max_iter != 100``),
    ``ratio_vs_plain``, ``ratio_vs_art1`` (``None`` without ART), ``passes`` (steps),
    ``adv_accuracy``, ``max_linf`` (largest ``|x_adv - x|``), and the agreement with the plain
    loop: ``max_diff_vs_plain``, ``pixels_differing`` (share differing by more than 1e-6),
    ``same_label_vs_plain`` (share of images with the same adversarial label); ``all_seconds``.
    ``art=False`` leaves ART out (only advkit against the plain loop, e.g. at 100 steps on a CPU).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1 (the thesis used 100), got {max_iter!r}")
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    impls = _implementations(model, x, y, eps, eps_step, art)
    times, cpu, x_adv = time_interleaved(impls, max_iter, repeats, sync)
    plain = statistics.median(times["plain loop"])
    art1 = statistics.median(times["ART bs=1"]) if "ART bs=1" in times else None
    with torch.no_grad():
        label = {name: model(xa).argmax(1) for name, xa in x_adv.items()}
    rows = []
    for name in impls:
        sec = statistics.median(times[name])
        diff = (x_adv[name] - x_adv["plain loop"]).abs()
        rows.append({
            "attack": "pgd-thesis", "impl": name, "seconds": round(sec, 3),
            "cpu_seconds": round(statistics.median(cpu[name]), 3),
            "seconds_100": round(sec * THESIS_ITERS / max_iter, 1), "ratio_vs_plain": round(sec / plain, 3),
            "ratio_vs_art1": None if art1 is None else round(sec / art1, 3), "passes": max_iter,
            "adv_accuracy": round((label[name] == y).float().mean().item(), 4),
            "max_linf": round((x_adv[name] - x).abs().amax().item(), 5),
            "max_diff_vs_plain": float(f"{diff.amax().item():.3g}"),
            "pixels_differing": round((diff > 1e-6).float().mean().item(), 5),
            "same_label_vs_plain": round((label[name] == label["plain loop"]).float().mean().item(), 4),
            "all_seconds": [round(t, 3) for t in times[name]],
        })
    return rows


def check_float64(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_iter: int, eps: float = EPS,
                  eps_step: float = EPS_STEP) -> dict:
    """Untimed: advkit vs the plain loop in float64, and the plain loop's own float32-vs-float64 difference.

    Returns ``max_diff_64`` and ``pixels_differing_64`` (advkit vs plain loop, both float64), and
    ``max_diff_32_vs_64`` and ``pixels_differing_32_vs_64`` (the plain loop, float32 vs float64).
    """
    import copy

    m64, x64 = copy.deepcopy(model).double(), x.double()
    p64 = plain_loop(m64, x64, y, eps, eps_step, max_iter)
    a64 = pgd(m64, x64, y, eps=eps, eps_step=eps_step, max_iter=max_iter, random_start=False).x_adv
    p32 = plain_loop(model, x, y, eps, eps_step, max_iter).double()
    d, d32 = (a64 - p64).abs(), (p32 - p64).abs()
    return {"max_diff_64": float(f"{d.amax().item():.3g}"),
            "pixels_differing_64": round((d > 1e-6).double().mean().item(), 5),
            "max_diff_32_vs_64": float(f"{d32.amax().item():.3g}"),
            "pixels_differing_32_vs_64": round((d32 > 1e-6).double().mean().item(), 5)}


def claims(rows: list[dict]) -> list[str]:
    """The two claims of issue 9, each as a line ending in PASS or FAIL (or 'not measured')."""
    by = {r["impl"]: r for r in rows}
    ours = by["advkit"]
    lines = [f"advkit / plain loop = {ours['ratio_vs_plain']:.3f} (wall; CPU "
             f"{ours['cpu_seconds'] / by['plain loop']['cpu_seconds']:.3f}); claim <= {MAX_VS_PLAIN}: "
             f"{'PASS' if ours['ratio_vs_plain'] <= MAX_VS_PLAIN else 'FAIL'}"]
    if ours["ratio_vs_art1"] is None:
        lines.append(f"ART bs=1 / advkit: not measured (--no-art, or ART is not installed); claim >= {MIN_VS_ART}")
    else:
        speedup = 1 / ours["ratio_vs_art1"]
        lines.append(f"ART bs=1 / advkit = {speedup:.2f} (wall; CPU "
                     f"{by['ART bs=1']['cpu_seconds'] / ours['cpu_seconds']:.2f}); claim >= {MIN_VS_ART}: "
                     f"{'PASS' if speedup >= MIN_VS_ART else 'FAIL'}")
    return lines


def table(rows: list[dict], device: str) -> str:
    """The Markdown table, with the thesis's row under ours."""
    def opt(v):
        return "n/a" if v is None else f"{v:.3f}"

    out = ["| method | wall s | CPU s | 100 steps, s | vs plain loop | vs ART bs=1 | adv. acc. | max diff vs plain "
           "| pixels differing | same label | all runs (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['impl']} ({device}) | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['seconds_100']:.1f} "
                   f"| {r['ratio_vs_plain']:.3f} | {opt(r['ratio_vs_art1'])} | {r['adv_accuracy']:.2f} "
                   f"| {r['max_diff_vs_plain']:.3g} | {r['pixels_differing']:.4f} | {r['same_label_vs_plain']:.2f} "
                   f"| {r['all_seconds']} |")
    lo, hi = THESIS_SECONDS
    out.append(f"| thesis: ART bs=1 (GTX 1080, per data set) | | | {lo:.0f}-{hi:.0f} (2m14s-2m38s) | | | | | | | |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64,
                        help="image height = width (default 64 for a CPU; 28: MNIST, 160: Imagenette-160)")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1 (MNIST, Pentomino) or 3")
    parser.add_argument("--iters", type=int, default=THESIS_ITERS,
                        help="PGD steps (default 100, the thesis's; fewer on a CPU, the table extrapolates to 100)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each method, median reported")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a loaded machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the images")
    parser.add_argument("--no-art", action="store_true",
                        help="time only advkit and the plain loop (ART at batch_size=1 is the slow part on a CPU)")
    parser.add_argument("--check64", action="store_true",
                        help="also rerun advkit and the plain loop in float64 (untimed): are the float32 "
                             "differences only rounding?")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device; use --device cpu")

    model, x, y = setup(args.size, args.channels, args.device, args.seed)
    rows = run(model, x, y, repeats=args.repeats, max_iter=args.iters, art=not args.no_art)
    gpu = f" ({torch.cuda.get_device_name(x.device)})" if x.is_cuda else ""
    print(f"Linf PGD, eps={EPS}, eps_step={EPS_STEP}, {args.iters} steps, no random start, untargeted; ResNet-50 "
          f"(random weights, seed {args.seed}), {len(x)} images {args.channels}x{args.size}x{args.size}; "
          f"device={args.device}{gpu}, torch threads={torch.get_num_threads()}, median of {args.repeats}\n")
    print(table(rows, args.device))
    print()
    for line in claims(rows):
        print(line)
    check = None
    if args.check64:
        check = check_float64(model, x, y, max_iter=args.iters)
        print(f"float64 check: advkit vs plain loop max |diff| {check['max_diff_64']:.3g}, "
              f"{check['pixels_differing_64']:.4f} of the pixels differ; the plain loop itself, float32 vs "
              f"float64: max |diff| {check['max_diff_32_vs_64']:.3g}, {check['pixels_differing_32_vs_64']:.4f} "
              "of the pixels differ")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "float64_check": check}, indent=1))


if __name__ == "__main__":
    main()
