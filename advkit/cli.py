"""The ``advkit`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _labs_list(args: argparse.Namespace) -> int:
    from . import runner

    for path in runner.discover():
        print(path.stem)
    return 0


def _params(items: list[str] | None) -> dict | None:
    """``-p NAME=VALUE`` options as a dict (JSON values, else strings); None after printing an error."""
    extra = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"advkit: -p expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return None
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    return extra


def _labs_run(args: argparse.Namespace) -> int:
    from . import runner

    extra = _params(args.param)
    if extra is None:
        return 2
    try:
        runs = runner.run(args.names, profile=args.profile, out=Path(args.out) if args.out else None,
                          extra_params=extra, threads=args.threads)
    except (ValueError, FileNotFoundError) as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 2
    return 0 if all(r.status == "ok" for r in runs) else 1


def _reproduce_thesis(args: argparse.Namespace) -> int:
    from . import reproduce

    extra = _params(args.param)
    if extra is None:
        return 2
    try:
        reproduce.thesis(profile=args.profile, datasets=args.datasets, images=args.images, out=args.out,
                         extra_params=extra, threads=args.threads)
    except (ValueError, FileNotFoundError) as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 1
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from . import paths

    print(f"data dir  ({paths.DATA_ENV}):  {paths.data_dir()}")
    print(f"cache dir ({paths.CACHE_ENV}): {paths.cache_dir()}")
    return 0


def _student_build(args: argparse.Namespace) -> int:
    from .grading import student

    try:
        paths = student.build(args.names, Path(args.out))
    except (ValueError, FileNotFoundError) as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _grade(args: argparse.Namespace) -> int:
    from .grading import Limits, grade

    limits = Limits(**({"memory": int(args.memory * 2**20)} if args.memory else {}))
    try:
        rows = grade(args.lab, args.submissions, Path(args.out), workers=args.workers, timeout=args.timeout,
                     cell_timeout=args.cell_timeout, dask=args.dask, limits=limits)
    except (ValueError, FileNotFoundError) as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 2
    graded = sum(r["status"] == "graded" for r in rows)
    print(f"{len(rows)} submission(s), {graded} graded; gradebook: {Path(args.out) / 'gradebook.csv'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advkit", description="advkit: a lab course on adversarial examples")
    sub = parser.add_subparsers(dest="command", required=True)

    labs = sub.add_parser("labs", help="list and run the lab notebooks")
    labs_sub = labs.add_subparsers(dest="labs_command", required=True)
    labs_sub.add_parser("list", help="list the labs").set_defaults(func=_labs_list)
    run = labs_sub.add_parser("run", help="execute labs with papermill and write a summary")
    run.add_argument("names", nargs="*", help="labs to run (e.g. 01_fgsm or 01); default: all")
    run.add_argument("--profile", help="parameter profile: a name in labs/profiles/ (e.g. gpu) or a YAML path")
    run.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                     help="override one parameter (JSON value), e.g. -p n_test=1000")
    run.add_argument("--out", help="output folder (default: build/ of the checkout)")
    run.add_argument("--threads", type=int, metavar="N",
                     help="torch threads per lab kernel (default: $OMP_NUM_THREADS, else the physical cores)")
    run.set_defaults(func=_labs_run)

    student = sub.add_parser("student", help="make the student copies of the labs")
    student_sub = student.add_subparsers(dest="student_command", required=True)
    sbuild = student_sub.add_parser("build", help="student copies: solutions stubbed, hidden tests removed")
    sbuild.add_argument("names", nargs="*", help="labs (e.g. 01_fgsm or 01); default: all")
    sbuild.add_argument("--out", required=True, help="folder for the student copies")
    sbuild.set_defaults(func=_student_build)

    grade = sub.add_parser("grade", help="grade submissions of one lab into OUT/gradebook.csv")
    grade.add_argument("lab", help="the lab (e.g. 04_deepfool, 04, or the instructor notebook's path)")
    grade.add_argument("submissions", nargs="+", help=".ipynb files or folders of them")
    grade.add_argument("--out", required=True, help="folder for gradebook.csv, feedback/ and results/")
    grade.add_argument("--workers", type=int, default=1, metavar="N", help="submissions graded at once")
    grade.add_argument("--timeout", type=float, metavar="SECONDS", help="total time per submission")
    grade.add_argument("--cell-timeout", type=float, metavar="SECONDS", help="time per cell (default: the lab's spec)")
    grade.add_argument("--memory", type=float, metavar="MIB", help="address-space limit of a kernel (default 8192)")
    grade.add_argument("--dask", metavar="ADDRESS", help="run on a Dask scheduler, e.g. tcp://host:8786")
    grade.set_defaults(func=_grade)

    rep = sub.add_parser("reproduce", help="reproduce a published experiment")
    rep_sub = rep.add_subparsers(dest="reproduce_command", required=True)
    th = rep_sub.add_parser("thesis", help="the 2020 thesis: ResNet-50, five perturbations, PGD (runs lab 08)")
    th.add_argument("--profile", help="parameter profile, e.g. gpu (all four data sets at full scale)")
    th.add_argument("--datasets", nargs="+", metavar="NAME",
                    help="mnist, pentomino, imagenette, imagewoof (default: all four)")
    th.add_argument("--images", type=int, metavar="N",
                    help="images per data set of the table with confidence intervals (default: the profile's)")
    th.add_argument("--out", help="output folder (default: build/thesis of the checkout)")
    th.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="any other lab parameter (JSON value)")
    th.add_argument("--threads", type=int, metavar="N", help="torch threads of the lab kernel")
    th.set_defaults(func=_reproduce_thesis)

    data = sub.add_parser("data", help="where advkit looks for data")
    data.set_defaults(func=_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
