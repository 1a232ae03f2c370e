"""The book's figure style and layout helpers (re-exported by :mod:`tem_core.plotting`).

Figures sized for the book's page (at most :data:`BOOK_WIDTH_IN` wide, fonts of 9 pt or more
at the displayed size, at most 3 panels per row) and the convergence plot of a fit.
"""

from __future__ import annotations

import numpy as np
import torch

#: Widest figure the book shows without scaling it down much [in] (its text column is about
#: 7 in at a laptop's width, so 9 pt fonts stay at least 9 pt on the page).
BOOK_WIDTH_IN = 7.2
#: Matplotlib settings of the book: fonts >= 9 pt at the displayed size, 100 dpi (so a
#: 7.2 in figure is 720 px, about the width of the page's text column).
BOOK_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 10.5,
    "figure.constrained_layout.use": True,
    "image.interpolation": "nearest",
}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib (call once at the top of a chapter)."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_STYLE)
    try:  # store PNGs at the style's dpi in executed notebooks (inline backend)
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - outside Jupyter
        pass


def book_figure(ncols: int = 1, nrows: int = 1, *, height: float | None = None, **kwargs):
    """A figure at most :data:`BOOK_WIDTH_IN` wide with ``nrows × ncols`` axes (≤ 3 per row).

    ``height`` [in] defaults to square panels. Extra keyword arguments go to
    ``plt.subplots``. Returns ``(fig, axes)`` with ``axes`` always a 2-D array.
    """
    import matplotlib.pyplot as plt

    if isinstance(ncols, bool) or not isinstance(ncols, int) or not 1 <= ncols <= 3:
        raise ValueError(f"ncols must be 1, 2 or 3 panels per row (legibility), got {ncols!r}")
    if isinstance(nrows, bool) or not isinstance(nrows, int) or nrows < 1:
        raise ValueError(f"nrows must be a positive integer, got {nrows!r}")
    width = BOOK_WIDTH_IN if ncols > 1 else min(BOOK_WIDTH_IN, 5.5)
    if height is None:
        height = nrows * (width / ncols) * 0.9
    kwargs.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def convergence(
    axes,
    history,
    *,
    truth: dict[str, float],
    labels: dict[str, str],
    scales: dict[str, float] | None = None,
):
    """Draw a fit's loss (first axis) and each parameter's error against the truth (second).

    ``history`` is a :class:`tem_core.fitting.FitHistory` whose traces are scalars (or
    vectors, shown as their norm); ``truth`` holds the true values in the same unit and
    ``labels`` a legend entry per parameter (with its unit). ``scales`` divides each error
    (e.g. to show Å and degrees on one axis); defaults to 1.
    """
    loss = np.asarray(history.loss)
    axes[0].plot(loss - loss.min() + 1.0)
    axes[0].set(yscale="log", xlabel="Adam step", ylabel="loss − min + 1 [nats]", title="loss")
    for name, label in labels.items():
        trace = history.trace(name).double()
        error = trace - torch.as_tensor(truth[name], dtype=torch.float64)
        if error.ndim > 1:
            error = torch.linalg.vector_norm(error, dim=tuple(range(1, error.ndim)))
        scale = 1.0 if scales is None else scales.get(name, 1.0)
        axes[1].plot(error.abs().numpy() / scale, label=label)
    axes[1].set(yscale="log", xlabel="Adam step", ylabel="|value − truth|", title="error")
    axes[1].legend()
    for ax in axes[:2]:
        ax.grid(alpha=0.3, which="both")
