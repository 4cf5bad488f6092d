"""Time advkit's PGD, C&W-L2 and DeepFool in one run, on the same model and batch.

Each attack is compared with a hand-written PyTorch loop of the same number of forward and
backward passes and with the peer libraries (Foolbox 3, ART); see bench_pgd.py, bench_cw.py and
bench_deepfool.py for the settings. Then the thesis's PGD timing (bench_thesis_pgd.py: ResNet-50,
ten images, against the plain loop and ART at batch_size=1; its own model, ``--thesis-*``
options, ``--thesis-iters 0`` skips it). Prints one table and, with --json, writes the rows.

    python benchmarks/run_all.py --n 100 --threads 1
    python benchmarks/run_all.py --n 1000 --device cuda --thesis-size 160 --thesis-channels 3 \
        --thesis-iters 100 --json build/bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cw  # noqa: E402
import bench_deepfool  # noqa: E402
import bench_pgd  # noqa: E402
import bench_thesis_pgd  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="MNIST test images, the same batch for every attack")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)")
    parser.add_argument("--thesis-size", type=int, default=28, help="image size of the ResNet-50 PGD benchmark "
                        "(default 28, MNIST's; 160: Imagenette-160)")
    parser.add_argument("--thesis-channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--thesis-iters", type=int, default=20,
                        help="PGD steps of the ResNet-50 benchmark (the thesis: 100; default 20 for a CPU; 0 skips it)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from advkit import data, zoo

    model = zoo.load("lenet5", device=args.device, progress=False)
    xs, ys = data.mnist("test").tensors
    x, y = xs[: args.n].to(args.device), ys[: args.n].to(args.device)
    rows = []
    for name, bench, kw in (("pgd", bench_pgd, {}), ("cw_l2", bench_cw, {"art_n": min(20, args.n)}),
                            ("deepfool", bench_deepfool, {"art_n": min(50, args.n),
                                                          "include": ("advkit", "plain loop", "foolbox", "art")})):
        print(f"[bench] {name} ...", flush=True)
        for row in bench.run(model, x, y, repeats=args.repeats, **kw):
            rows.append({"attack": name, **row})
    if args.thesis_iters:
        print("[bench] pgd_thesis (ResNet-50) ...", flush=True)
        rn, rx, ry = bench_thesis_pgd.setup(args.thesis_size, args.thesis_channels, args.device)
        for row in bench_thesis_pgd.run(rn, rx, ry, repeats=args.repeats, max_iter=args.thesis_iters):
            rows.append({"attack": "pgd_thesis", **row})
    print(f"\nLeNet-5, {len(x)} MNIST test images, device={args.device}, "
          f"torch threads={torch.get_num_threads()}, median of {args.repeats}")
    if args.thesis_iters:
        print(f"pgd_thesis: ResNet-50 (random weights), 10 images {args.thesis_channels}x{args.thesis_size}x"
              f"{args.thesis_size}, {args.thesis_iters} steps (see bench_thesis_pgd.py)")
    print(f"{'attack':<13}{'impl':<14}{'seconds':>10}{'vs plain':>10}")
    for r in rows:
        ratio = r.get("ratio_vs_plain")
        print(f"{r['attack']:<13}{r['impl']:<14}{r['seconds']:>10.3f}{ratio if ratio is None else format(ratio, '.3f'):>10}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
