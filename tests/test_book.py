"""The book's pages are legible and work offline.

Checks on the chapter sources and, when a built book is present (``make book`` writes
``book/_build/html``), on the built HTML pages:

* every chapter in ``book/_toc.yml`` has a source in ``notebooks/`` and, in a built book, a
  page;
* code lines (sources) and printed output lines (executed chapters) are at most
  :data:`MAX_LINE` characters, so nothing hides behind a horizontal scroll bar;
* a built page shows no error output, its images exist (inline PNGs decode, files exist),
  it requests no script or style sheet from another host, and MathJax is the book's own
  copy (offline maths);
* ``book/run_notebooks.py`` parses parameters and grids as documented.

The built-book checks skip without ``book/_build/html`` (the suite does not build the
book: that takes minutes); ``make book`` followed by ``make test`` runs them.
"""

from __future__ import annotations

import base64
import html.parser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BOOK = REPO_ROOT / "book"
HTML = BOOK / "_build" / "html"
MAX_LINE = 88  # characters; the code column of a page at a laptop's width holds ~90
# Chapters whose owners are rewriting them and have not yet wrapped their lines: the width
# checks are expected to fail there (not strict: they pass as soon as the chapter complies;
# then remove it from this set).
NOT_YET_WRAPPED: set[str] = set()


def _expect_wrapped(stem: str) -> None:
    if stem in NOT_YET_WRAPPED:
        pytest.xfail(f"{stem} is being rewritten by its owner; lines not yet <= {MAX_LINE}")


def _toc_chapters() -> list[str]:
    text = (BOOK / "_toc.yml").read_text()
    return re.findall(r"file:\s*chapters/(\S+)", text)


CHAPTERS = _toc_chapters()


def test_toc_lists_every_chapter_source_in_order() -> None:
    sources = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert CHAPTERS == sources, "book/_toc.yml and notebooks/*.py disagree"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_code_lines_fit_the_page(stem: str) -> None:
    import jupytext

    nb = jupytext.read(REPO_ROOT / "notebooks" / f"{stem}.py")
    _expect_wrapped(stem)
    long = [
        line
        for cell in nb.cells
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if len(line) > MAX_LINE
    ]
    assert not long, f"{stem}: {len(long)} code lines over {MAX_LINE} characters: {long[0]!r}"


def long_output_lines(notebook: dict) -> list[str]:
    """Printed lines (streams and text/plain results) over :data:`MAX_LINE` characters."""
    found = []
    for cell in notebook["cells"]:
        if "remove-output" in cell.get("metadata", {}).get("tags", []):
            continue  # not shown on the page
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out.get("text", ""))
            elif "text/plain" in out.get("data", {}) and not {
                "image/png",
                "text/html",
            } & set(out["data"]):
                text = "".join(out["data"]["text/plain"])
            else:
                continue
            found += [line for line in text.splitlines() if len(line) > MAX_LINE]
    return found


def test_long_output_lines_are_found() -> None:
    nb = {"cells": [{"outputs": [{"output_type": "stream", "text": ["x" * 89 + "\n", "ok"]}]}]}
    assert long_output_lines(nb) == ["x" * 89]


# --- the runner's parameters --------------------------------------------------------------


def _runner():
    sys.path.insert(0, str(BOOK))
    try:
        import run_notebooks
    finally:
        sys.path.remove(str(BOOK))
    return run_notebooks


def test_runner_parses_parameters_and_grids() -> None:
    rn = _runner()
    assert rn.parse_value("200") == 200 and rn.parse_value("[1.0, 2]") == [1.0, 2]
    assert rn.parse_value("auto") == "auto"
    sets = rn.parameter_sets([("voltage_kv", "200")], [("dose_e_per_a2", "10,20,40")])
    assert sets == [{"voltage_kv": 200, "dose_e_per_a2": d} for d in (10, 20, 40)]
    assert rn.run_name("02_imaging", {"voltage_kv": 200, "quick": True}) == (
        "02_imaging[voltage_kv=200]"
    )
    assert "voltage_kv" in rn.declared_parameters(REPO_ROOT / "notebooks" / "02_imaging.py")


def test_runner_rejects_unknown_parameters(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(BOOK / "run_notebooks.py"), "00_introduction", "-p", "bogus=1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "has no parameter(s) ['bogus']" in result.stderr


# --- the built book -----------------------------------------------------------------------

needs_build = pytest.mark.skipif(
    not (HTML / "index.html").exists(), reason="no built book (run `make book`)"
)


class _Page(html.parser.HTMLParser):
    """Collects scripts, style sheets, images, error outputs and code lines of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.errors = 0
        self._pre = 0
        self._line: list[str] = []
        self.pre_lines: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and a.get("rel") in ("stylesheet", "preload") and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if {"output", "error"} <= set(classes) or "traceback" in classes:
            self.errors += 1
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag) -> None:
        if tag == "pre" and self._pre:
            self._pre -= 1
            self.pre_lines += "".join(self._line).splitlines()
            self._line = []

    def handle_data(self, data) -> None:
        if self._pre:
            self._line.append(data)


def _page(stem: str) -> tuple[Path, _Page]:
    path = HTML / "chapters" / f"{stem}.html"
    assert path.exists(), f"chapter page {path} missing: rebuild the book"
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    return path, parser


def _external(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url))


@needs_build
@pytest.mark.parametrize("stem", CHAPTERS)
def test_built_chapter_page(stem: str) -> None:
    path, page = _page(stem)
    assert page.errors == 0, f"{stem}: error output on the page"
    external = [u for u in page.scripts + page.links if _external(u)]
    assert not external, f"{stem}: requests {external} from the internet"
    if 'class="math' in path.read_text(encoding="utf-8"):  # maths typeset by local MathJax
        assert any(s.split("?")[0].endswith("mathjax/tex-chtml.js") for s in page.scripts), stem
    assert page.images, f"{stem}: no figure"
    for src in page.images:
        if src.startswith("data:image/png;base64,"):
            png = base64.b64decode(src.split(",", 1)[1])
            assert png[:8] == b"\x89PNG\r\n\x1a\n", f"{stem}: broken inline image"
        else:
            assert not _external(src), f"{stem}: image from the internet {src}"
            target = (path.parent / src.split("#")[0]).resolve()
            assert target.is_file() and target.stat().st_size > 0, f"{stem}: missing {src}"
    _expect_wrapped(stem)
    long = [line for line in page.pre_lines if len(line) > MAX_LINE]
    assert not long, f"{stem}: {len(long)} lines over {MAX_LINE} characters: {long[0]!r}"


@needs_build
def test_built_book_serves_mathjax_itself() -> None:
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()


@needs_build
@pytest.mark.parametrize("stem", CHAPTERS)
def test_executed_chapter_has_no_error_or_long_output(stem: str) -> None:
    executed = BOOK / "chapters" / f"{stem}.ipynb"
    if not executed.exists():
        pytest.skip(f"{executed} not executed")
    nb = json.loads(executed.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{stem}: {errors[0]['ename']}: {errors[0]['evalue']}"
    _expect_wrapped(stem)
    long = long_output_lines(nb)
    assert not long, f"{stem}: printed lines over {MAX_LINE} characters: {long[0]!r}"


def test_runner_writes_a_parameterised_run(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BOOK / "run_notebooks.py"),
            "00_introduction",
            "--quick",
            "-p",
            "voltages_kv=[200.0]",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = tmp_path.glob("*.ipynb")
    assert run.name == "00_introduction[voltages_kv=_200.0_].ipynb"
    outputs = json.loads(run.read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in outputs for o in c.get("outputs", []))
    table = [line.split()[0] for line in printed.splitlines()[1:] if line[:1] == " "]
    assert table == ["200"], printed  # the table lists only the requested voltage


# --- the interactive path -----------------------------------------------------------------


def test_lab_opens_python_chapters_as_notebooks() -> None:
    overrides = json.loads(
        (REPO_ROOT / "jupyter-config" / "labconfig" / "default_setting_overrides.json").read_text()
    )
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"
    makefile = (REPO_ROOT / "Makefile").read_text()
    lab = makefile[makefile.index("\nlab:") :].split("\n\n")[0]
    assert "jupyter-config" in lab and "JUPYTER_CONFIG_PATH" in lab
    # jupytext's server extension is enabled by its install; naming it wrongly printed a
    # traceback ("jupytext" is not a server extension module)
    assert "jpserver_extensions" not in lab
