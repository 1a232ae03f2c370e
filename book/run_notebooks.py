"""Execute the book's jupytext notebooks headlessly with papermill.

Each ``notebooks/NN_name.py`` (jupytext percent format) is executed with its
default parameters (or ``quick=True`` with ``--quick``) into
``<out>/NN_name.ipynb``, which the Jupyter Book build then renders without
executing again. Any error stops the run with a non-zero exit status, printing
the failing cell and its traceback.

Usage::

    python book/run_notebooks.py --notebooks notebooks --out book/chapters [--quick] [NAME ...]

With parameters (``-p name=value``, repeatable; values are Python literals, else strings)
or a grid (``--grid name=v1,v2,...``, repeatable: every combination is run), the chapters
named on the command line are executed with those values into ``runs/`` (or ``--out``),
one notebook per run named after its parameters, e.g. ::

    python book/run_notebooks.py 02_imaging -p voltage_kv=200 -p defocus_um=2.5
    python book/run_notebooks.py 02_imaging --quick --grid dose_e_per_a2=10,20,40,80

writes ``runs/02_imaging[voltage_kv=200,defocus_um=2.5].ipynb`` and four notebooks of a
dose series; open them in JupyterLab (``make lab``) or with ``jupyter nbconvert --to html``.
Unknown parameter names are rejected (papermill would silently add them).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

RUNS = Path(__file__).resolve().parents[1] / "runs"  # repository root/runs


def parse_value(text: str) -> Any:
    """A Python literal (``200``, ``[1.0, 2.0]``, ``True``, ``'x'``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name.strip(), value.strip()


def parameter_sets(
    fixed: list[tuple[str, str]], grid: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every combination of the ``grid`` values, each with the ``fixed`` parameters."""
    base = {name: parse_value(value) for name, value in fixed}
    axes = [[(name, parse_value(v)) for v in values.split(",")] for name, values in grid]
    return [{**base, **dict(combo)} for combo in itertools.product(*axes)]


def run_name(stem: str, parameters: dict[str, Any]) -> str:
    """File stem of a run: the chapter and its parameters, ``02_imaging[voltage_kv=200]``."""
    shown = ",".join(f"{k}={v}" for k, v in parameters.items() if k != "quick")
    shown = "".join(c if c.isalnum() or c in "=,._-" else "_" for c in shown)
    return f"{stem}[{shown}]" if shown else stem


def declared_parameters(source: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` of a jupytext notebook."""
    import jupytext

    cells = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    names: set[str] = set()
    for cell in cells:
        for node in ast.parse(cell.source).body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def execute(
    source: Path,
    output: Path,
    *,
    quick: bool,
    cwd: Path,
    parameters: dict[str, Any] | None = None,
) -> float:
    """Execute one jupytext notebook into ``output``; return its wall time [s]."""
    import jupytext
    import papermill as pm

    notebook = jupytext.read(source)
    parameters = dict(parameters or {})
    if quick:
        parameters["quick"] = True
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pm.execute_notebook(
        notebook,
        str(output),
        parameters=parameters,
        kernel_name="python3",
        language="python",
        cwd=str(cwd),
        progress_bar=False,
        log_output=False,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument(
        "--out", type=Path, default=None, help="book/chapters, or runs/ with -p or --grid"
    )
    parser.add_argument("--quick", action="store_true", help="pass quick=True (CI size)")
    parser.add_argument(
        "-p",
        "--parameter",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter of the chapters (a Python literal or a string)",
    )
    parser.add_argument(
        "--grid",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run every combination of these values (a parameter sweep)",
    )
    parser.add_argument("names", nargs="*", help="only these notebooks (stem names)")
    args = parser.parse_args(argv)
    runs = bool(args.parameter or args.grid)
    if runs and not args.names:
        parser.error("-p/--grid need the chapters to run, e.g. 02_imaging")
    out = args.out if args.out is not None else (RUNS if runs else Path("book/chapters"))

    import papermill as pm

    # kernels must use the inline backend so figures are stored in the executed notebooks
    os.environ.pop("MPLBACKEND", None)
    # chapters skip what needs a live widget frontend (e.g. drawing into an Output widget)
    os.environ["TEM_BOOK_HEADLESS"] = "1"
    sources = sorted(args.notebooks.glob("[0-9][0-9]_*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in set(args.names)]
    if not sources:
        print(f"no notebooks found in {args.notebooks}", file=sys.stderr)
        return 2
    settings = parameter_sets(args.parameter, args.grid) if runs else [{}]
    for source in sources:
        unknown = sorted({k for s in settings for k in s} - declared_parameters(source))
        if unknown:
            print(
                f"{source.name} has no parameter(s) {unknown} in its parameters cell",
                file=sys.stderr,
            )
            return 2
    jobs = [(source, parameters) for source in sources for parameters in settings]
    for source, parameters in jobs:
        output = out / ((run_name(source.stem, parameters) if runs else source.stem) + ".ipynb")
        print(f"executing {source} -> {output}", flush=True)
        try:
            seconds = execute(
                source,
                output,
                quick=args.quick,
                cwd=source.parent.resolve(),
                parameters=parameters,
            )
        except pm.PapermillExecutionError as exc:
            print(f"\nFAILED: {source}, cell {exc.exec_count}:\n{exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # parsing or kernel start-up failures: still name the notebook
            print(f"\nFAILED: {source}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"  done in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
