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


def _labs_run(args: argparse.Namespace) -> int:
    from . import runner

    extra = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"advkit: -p expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    try:
        runs = runner.run(args.names, profile=args.profile, out=Path(args.out) if args.out else None,
                          extra_params=extra, threads=args.threads)
    except (ValueError, FileNotFoundError) as err:
        print(f"advkit: {err}", file=sys.stderr)
        return 2
    return 0 if all(r.status == "ok" for r in runs) else 1


def _data_info(args: argparse.Namespace) -> int:
    from . import paths

    print(f"data dir  ({paths.DATA_ENV}):  {paths.data_dir()}")
    print(f"cache dir ({paths.CACHE_ENV}): {paths.cache_dir()}")
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

    data = sub.add_parser("data", help="where advkit looks for data")
    data.set_defaults(func=_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
