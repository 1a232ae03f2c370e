"""Execute the book's jupytext notebooks headlessly with papermill.

Each ``notebooks/NN_name.py`` (jupytext percent format) is executed with its
default parameters (or ``quick=True`` with ``--quick``) into
``<out>/NN_name.ipynb``, which the Jupyter Book build then renders without
executing again. Any error stops the run with a non-zero exit status, printing
the failing cell and its traceback.

Usage::

    python book/run_notebooks.py --notebooks notebooks --out book/chapters [--quick] [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def execute(source: Path, output: Path, *, quick: bool, cwd: Path) -> float:
    """Execute one jupytext notebook into ``output``; return its wall time [s]."""
    import jupytext
    import papermill as pm

    notebook = jupytext.read(source)
    parameters = {"quick": True} if quick else {}
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
    parser.add_argument("--out", type=Path, default=Path("book/chapters"))
    parser.add_argument("--quick", action="store_true", help="pass quick=True (CI size)")
    parser.add_argument("names", nargs="*", help="only these notebooks (stem names)")
    args = parser.parse_args(argv)

    import papermill as pm

    # kernels must use the inline backend so figures are stored in the executed notebooks
    os.environ.pop("MPLBACKEND", None)
    sources = sorted(args.notebooks.glob("[0-9][0-9]_*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in set(args.names)]
    if not sources:
        print(f"no notebooks found in {args.notebooks}", file=sys.stderr)
        return 2
    for source in sources:
        output = args.out / (source.stem + ".ipynb")
        print(f"executing {source} -> {output}", flush=True)
        try:
            seconds = execute(source, output, quick=args.quick, cwd=source.parent.resolve())
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
