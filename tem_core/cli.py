"""The ``tem-book`` command line: datasets on Dask and single images from a TOML file.

::

    tem-book generate dataset.toml --out DIR [--scheduler ADDRESS] [--workers N]
    tem-book simulate settings.toml --out FILE [--index I] [--device DEVICE]

``generate`` runs :func:`tem_core.dataset.generate_dataset` (a local Dask cluster by default,
``--workers 0`` for a plain loop in one process, ``--scheduler tcp://host:8786`` for an
existing cluster); a second call resumes. ``simulate`` writes one item of the same kind of
file: ``FILE`` (micrograph or tilt stack, with ``.rawtlt``/``.tlt``), and next to it the
requested ground truth (``<stem>_noise_free.mrc``, ``<stem>.star``, ``<stem>_potential.mrc``);
``--index I`` regenerates item ``I`` of a dataset bit for bit. A settings file for
``simulate`` may leave out ``dataset.items`` and ``dataset.seed`` (1 and 0).

Exit status: 0 on success, 1 when items failed (listed in ``DIR/failures.json``), 2 on
invalid input (the message names the file, key, value and unit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tem-book",
        description="Simulate cryo-EM micrographs and tilt series (tem_core).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate a dataset described by a TOML file")
    gen.add_argument("dataset", type=Path, help="dataset description (.toml)")
    gen.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    gen.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    gen.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local Dask workers (default: one per core, or per GPU); 0: a plain loop",
    )
    gen.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="torch/Taichi CPU threads per worker (default: cores // workers)",
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    sim = sub.add_parser("simulate", help="simulate one micrograph or tilt series")
    sim.add_argument("settings", type=Path, help="settings (.toml, same format as a dataset)")
    sim.add_argument("--out", type=Path, required=True, help="output MRC file")
    sim.add_argument("--index", type=int, default=0, help="item of the description (default 0)")
    sim.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default: file's)")
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from tem_core.dataset import generate_item, item_paths, load_dataset_spec

    spec = load_dataset_spec(args.settings, defaults={"dataset": {"items": 1, "seed": 0}})
    out = args.out if args.out.suffix else args.out.with_suffix(".mrc")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    stem = out.stem
    roles = item_paths(spec, 0)  # the roles depend on the outputs requested, not the item
    names = {
        "image": out.name,
        "rawtlt": f"{stem}.rawtlt",
        "tlt": f"{stem}.tlt",
        "noise_free": f"{stem}_noise_free.mrc",
        "particles": f"{stem}.star",
        "potential": f"{stem}_potential.mrc",
    }
    paths = {role: names[role] for role in roles}
    record = generate_item(
        spec, args.index, out.parent, device=args.device, paths=paths, write_record=False
    )
    for entry in record["files"].values():
        print(out.parent / entry["path"])
    return 0


def _generate(args: argparse.Namespace) -> int:
    from tem_core.dataset import generate_dataset

    report = generate_dataset(
        args.dataset,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        threads_per_worker=args.threads_per_worker,
        progress=not args.quiet,
    )
    print(
        f"{len(report.completed)} items generated, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed in {report.seconds:.1f} s -> {report.out}"
    )
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tem-book`` console script; returns the exit status."""
    from tem_core.dataset import DatasetSpecError
    from tem_core.memory import map_large_allocations

    args = _parser().parse_args(argv)
    map_large_allocations()  # this process is ours: resident memory follows the arrays
    try:
        return _simulate(args) if args.command == "simulate" else _generate(args)
    except (DatasetSpecError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"tem-book {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - python -m tem_core.cli
    sys.exit(main())
