"""Matplotlib figures shared by the book's chapters: images, power spectra, montages.

Display helpers only (no physics): they take tensors or arrays, move them to the CPU and
draw on given axes, so notebooks stay thin. Power spectra are Welch estimates, the average
periodogram of non-overlapping square tiles (:func:`tem_core.mtf_fit.averaged_periodogram`),
shown with a logarithmic grey scale and axes in spatial frequency [1/Å].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tem_core._plotting_book import (
    BOOK_WIDTH_IN,
    book_figure,
    convergence,
    use_book_style,
)
from tem_core._plotting_tables import (
    margin_table,
    method_margins,
    peer_results_text,
    recorded_table,
    scaling_text,
    wrap_text,
)
from tem_core.grids import radial_frequency_cycles_per_px
from tem_core.mtf_fit import averaged_periodogram, radial_profile
from tem_core.validation import require_integer, require_positive

__all__ = [
    "heatmap_table",
    "margin_table",
    "method_margins",
    "peer_results_text",
    "recorded_table",
    "scaling_text",
    "wrap_text",
    "book_figure",
    "convergence",
    "image_tiles",
    "montage",
    "parameter_histograms",
    "power_spectrum",
    "radial_average",
    "show_fsc",
    "show_image",
    "show_missing_wedge",
    "show_orthoslices",
    "show_power_spectrum",
    "show_renderings",
    "volume_explorer",
    "use_book_style",
]


def _numpy(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.is_complex():
            raise TypeError(f"image must be real, got dtype {image.dtype}")
        return image.double().numpy()
    return np.asarray(image, dtype=np.float64)


def image_tiles(image: Any, tile: int) -> torch.Tensor:
    """Non-overlapping ``tile × tile`` crops of a 2-D image, as a ``(B, tile, tile)`` float64.

    Rows and columns beyond the last whole tile are dropped.
    """
    x = torch.as_tensor(_numpy(image))
    if x.ndim != 2:
        raise ValueError(f"image must be 2-D (ny, nx), got shape {tuple(x.shape)}")
    require_integer("tile", tile, minimum=16, unit="pixels")
    ny, nx = (n // tile for n in x.shape)
    if ny == 0 or nx == 0:
        raise ValueError(f"tile ({tile} px) must not exceed the image shape {tuple(x.shape)}")
    x = x[: ny * tile, : nx * tile]
    return x.reshape(ny, tile, nx, tile).permute(0, 2, 1, 3).reshape(-1, tile, tile)


def power_spectrum(image: Any, *, tile: int = 256) -> torch.Tensor:
    """Welch power spectrum of ``image``: Hann-windowed periodograms of its tiles, averaged.

    Returns a ``(tile, tile)`` float64 tensor in FFT order [image units² per frequency bin].
    """
    return averaged_periodogram(image_tiles(image, tile), taper="hann", detrend="plane")


def radial_average(
    spectrum: torch.Tensor, *, sampling_a: float, n_bins: int = 96
) -> tuple[np.ndarray, np.ndarray]:
    """Ring average of a spectrum in FFT order: (frequency [1/Å], mean value) up to Nyquist."""
    require_positive("sampling_a", sampling_a, "Å")
    freq, values = radial_profile(spectrum, n_bins=n_bins)
    return freq.cpu().numpy() / sampling_a, values.cpu().numpy()


def _ring_mean(power: np.ndarray) -> np.ndarray:
    """Mean of ``power`` (FFT order) over rings one Fourier pixel wide, at every pixel."""
    ny, nx = power.shape
    radius = radial_frequency_cycles_per_px((ny, nx), dtype=torch.float64).numpy()
    ring = np.rint(radius * max(ny, nx)).astype(np.int64)
    sums = np.bincount(ring.ravel(), weights=power.ravel())
    counts = np.bincount(ring.ravel())
    return np.maximum(sums[ring] / counts[ring], np.finfo(float).tiny)


def show_image(
    ax,
    image: Any,
    *,
    sampling_a: float | None = None,
    title: str = "",
    label: str | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    cmap: str = "gray",
    unit: str = "nm",
    symmetric: bool = False,
):
    """Draw a 2-D image with grey levels clipped to ``percentiles``.

    With ``sampling_a`` [Å] the axes are in ``unit`` (``"nm"`` or ``"Å"``), else in pixels.
    With ``label`` a colour bar with that label is added. With ``symmetric`` the grey (or
    colour) scale is centred on zero (for derivatives and differences). Returns the
    ``AxesImage``.
    """
    data = _numpy(image)
    lo, hi = np.percentile(data, percentiles)
    if symmetric:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    extent = None
    if sampling_a is not None:
        scale = sampling_a / (10.0 if unit == "nm" else 1.0)
        extent = (0.0, data.shape[1] * scale, 0.0, data.shape[0] * scale)
        ax.set(xlabel=f"x [{unit}]", ylabel=f"y [{unit}]")
    im = ax.imshow(
        data,
        cmap=cmap,
        vmin=lo,
        vmax=hi,
        origin="lower",
        extent=extent,
        interpolation="nearest" if data.shape[0] < 200 else "antialiased",
    )
    if title:
        ax.set_title(title)
    if label is not None:
        ax.figure.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    return im


def show_power_spectrum(
    ax,
    spectrum: torch.Tensor,
    *,
    sampling_a: float,
    title: str = "",
    percentiles: tuple[float, float] = (1.0, 99.7),
    max_frequency_per_a: float | None = None,
    flatten: bool = False,
):
    """Draw ``log10`` of a spectrum in FFT order, centred, with axes in spatial frequency [1/Å].

    The zero-frequency bin is excluded from the grey-level range. With ``flatten`` the
    spectrum is divided by its ring average first, so that Thon rings stand out at every
    frequency (as in CTF-fitting programs). Returns the ``AxesImage``.
    """
    require_positive("sampling_a", sampling_a, "Å")
    power = _numpy(spectrum)
    if flatten:
        power = power / _ring_mean(power)
    log_power = np.log10(np.maximum(power, np.finfo(float).tiny))
    log_power[0, 0] = np.median(log_power)
    lo, hi = np.percentile(log_power, percentiles)
    ny, nx = power.shape
    half = 0.5 / sampling_a
    im = ax.imshow(
        np.fft.fftshift(log_power),
        cmap="gray",
        vmin=lo,
        vmax=hi,
        origin="lower",
        extent=(-half, half * (nx - 2) / nx, -half, half * (ny - 2) / ny),
    )
    ax.set(xlabel="$k_x$ [1/Å]", ylabel="$k_y$ [1/Å]")
    if max_frequency_per_a is not None:
        ax.set(
            xlim=(-max_frequency_per_a, max_frequency_per_a),
            ylim=(-max_frequency_per_a, max_frequency_per_a),
        )
    if title:
        ax.set_title(title)
    return im


def montage(
    images: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    panel_size: float | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    label: str | None = None,
    common_scale: bool = True,
):
    """Figure with a grid of the images of a ``(n, ny, nx)`` stack (e.g. a tilt series).

    With ``common_scale`` one grey scale (percentiles over the whole stack) is shared and a
    single colour bar labelled ``label`` is drawn. ``panel_size`` [in] defaults to what fits
    ``ncols`` panels in :data:`BOOK_WIDTH_IN`; keep titles short (9 pt). Returns the figure.
    """
    import matplotlib.pyplot as plt

    stack = _numpy(images)
    if stack.ndim != 3:
        raise ValueError(f"images must have shape (n, ny, nx), got {stack.shape}")
    n = stack.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    aspect = stack.shape[1] / stack.shape[2]
    bar = 0.8 if (common_scale and label is not None) else 0.1
    if panel_size is None:
        panel_size = (BOOK_WIDTH_IN - bar) / ncols
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols + bar, (panel_size * aspect + 0.25) * nrows),
        squeeze=False,
        constrained_layout=True,
    )
    lo, hi = np.percentile(stack, percentiles) if common_scale else (None, None)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        vmin, vmax = (lo, hi) if common_scale else np.percentile(stack[i], percentiles)
        im = ax.imshow(stack[i], cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if common_scale and label is not None and im is not None:
        fig.colorbar(im, ax=axes, label=label, shrink=0.8)
    return fig


def parameter_histograms(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    marked: Sequence[dict[str, Any]] | None = None,
    bins: int = 20,
    panel_size: float = 2.3,
):
    """Histograms of per-item parameters, three panels per row.

    ``rows`` are dicts keyed by parameter (e.g. :func:`tem_core.dataset.item_parameters` for
    many indices, or the rows of a dataset's metadata table); numbers get a histogram, other
    values a bar per value. ``marked`` rows (e.g. the items generated) are drawn as ticks
    along the bottom of each panel. Returns the figure.
    """
    import matplotlib.pyplot as plt

    require_integer("bins", bins, minimum=1)
    if not rows:
        raise ValueError("rows must hold at least one item, got none")
    labels = list(labels) if labels is not None else list(keys)
    if len(labels) != len(keys):
        raise ValueError(f"labels must have one entry per key ({len(keys)}), got {len(labels)}")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols + 0.3, 0.8 * panel_size * nrows + 0.3),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, key, label in zip(axes.flat, keys, labels, strict=False):
        values = [row[key] for row in rows]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numbers and len(set(values)) > 8:
            ax.hist(values, bins=bins, color="0.6")
            where = [row[key] for row in marked or ()]
        else:  # a few distinct values (a choice, a small integer range): one bar each
            names = sorted(set(values)) if numbers else sorted({str(v) for v in values})
            found = [v if numbers else str(v) for v in values]
            ax.bar(range(len(names)), [found.count(n) for n in names], color="0.6")
            ax.set_xticks(range(len(names)), [f"{n:g}" if numbers else n for n in names])
            key_of = (lambda v: v) if numbers else str
            where = [names.index(key_of(row[key])) for row in marked or ()]
        for x in where:
            ax.axvline(x, ymax=0.08, color="C3", lw=1.5)
        ax.set_xlabel(label, fontsize=9)
        ax.tick_params(labelsize=9)
    axes[0, 0].set_ylabel("items", fontsize=9)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_axis_off()
    return fig


# --- tomography: orthoslices, FSC curves, renderings, missing wedge, explorer ----------------
def _robust_limits(data: np.ndarray, percentiles=(0.5, 99.5)) -> tuple[float, float]:
    lo, hi = np.percentile(data, percentiles)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def show_orthoslices(
    volumes: dict[str, Any],
    *,
    index: tuple[int, int, int] | None = None,
    voxel_size_a: float | None = None,
    panel_in: float = 2.3,
    cmap: str = "gray",
):
    """One row per volume: the central xy, xz and zy slices (``index = (z, y, x)`` to move).

    Each row shares the grey scale of its volume (0.5-99.5 percentiles). Axes in nm with
    ``voxel_size_a`` [Å], else in voxels. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from tem_core.render import orthoslices

    names = list(volumes)
    first = volumes[names[0]]
    nz, ny, nx = first.shape
    widths = [nx, nx, nz]
    fig, axes = plt.subplots(
        len(names),
        3,
        figsize=(min(7.5, 3 * panel_in), panel_in * len(names) * max(ny, nz) / nx + 0.4),
        gridspec_kw=dict(width_ratios=widths),
        squeeze=False,
        constrained_layout=True,
    )
    scale = 1.0 if voxel_size_a is None else voxel_size_a / 10.0
    unit = "voxels" if voxel_size_a is None else "nm"
    for row, name in enumerate(names):
        vol = volumes[name]
        data = _numpy(vol)
        lo, hi = _robust_limits(data)
        panels = orthoslices(torch.as_tensor(data), index)
        labels = (("x", "y"), ("x", "z"), ("z", "y"))
        for col, (image, (xl, yl)) in enumerate(zip(panels, labels, strict=True)):
            ax = axes[row, col]
            img = image.numpy()
            ax.imshow(
                img,
                cmap=cmap,
                vmin=lo,
                vmax=hi,
                origin="lower",
                extent=(0, img.shape[1] * scale, 0, img.shape[0] * scale),
                interpolation="nearest",
            )
            ax.set_xlabel(f"{xl} [{unit}]", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{name}\n{yl} [{unit}]", fontsize=9)
            else:
                ax.set_ylabel(f"{yl} [{unit}]", fontsize=9)
            ax.tick_params(labelsize=9)
            if row == 0:
                ax.set_title(("xy", "xz", "zy")[col] + " slice", fontsize=10)
    return fig


def show_fsc(
    ax,
    curves: dict[str, tuple[Any, Any]],
    *,
    threshold: float = 0.143,
    unit: str = "1/nm",
):
    """FSC curves ``{label: (frequency [1/Å], fsc)}`` with a threshold line."""
    factor = 10.0 if unit == "1/nm" else 1.0
    for label, (freq, fsc) in curves.items():
        ax.plot(_numpy(freq) * factor, _numpy(fsc), label=label, lw=1.3)
    ax.axhline(threshold, color="0.5", ls="--", lw=0.8, label=f"{threshold}")
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set(xlabel=f"spatial frequency [{unit}]", ylabel="FSC", ylim=(-0.2, 1.02))
    ax.legend(fontsize=9)


def show_renderings(images: dict[str, Any], *, panel_in: float = 2.4, ncols: int = 3):
    """Rendered images ``{label: (h, w, 3 or 4) tensor}`` side by side (at most 3 a row)."""
    import matplotlib.pyplot as plt

    names = list(images)
    ncols = max(1, min(ncols, 3, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(min(7.5, panel_in * ncols), panel_in * nrows + 0.3),
        squeeze=False,
        constrained_layout=True,
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        rgb = _numpy(images[name])[..., :3]
        ax.imshow(np.clip(rgb, 0.0, 1.0) if rgb.max() <= 1.0 else rgb / rgb.max())
        ax.set_title(name, fontsize=10)
    return fig


def show_missing_wedge(ax_angles, ax_spectrum, geometry, acquisition_order=None):
    """Tilt angles (in acquisition order if given) and the xz Fourier coverage of the
    geometry: ``log |F(A^T A δ)|``, the spectrum of the point-spread function."""
    from tem_core.reconstruct import TiltGeometry, TomographyOperator

    angles = np.degrees(np.asarray(geometry.angles_rad))
    order = np.arange(len(angles)) if acquisition_order is None else np.argsort(acquisition_order)
    ax_angles.plot(np.arange(len(angles)), angles[order], ".-", ms=4, lw=0.8)
    ax_angles.set(xlabel="acquisition order", ylabel="tilt angle [deg]")
    n = 64
    small = TiltGeometry(
        angles_rad=geometry.angles_rad, detector_shape=(1, n), pixel_size_a=1.0, thickness_a=n
    )
    op = TomographyOperator(small, dtype=torch.float64)
    delta = torch.zeros(small.volume_shape, dtype=torch.float64)
    delta[n // 2, 0, n // 2] = 1.0
    psf = op.T(op(delta))[:, 0, :]
    spectrum = torch.fft.fftshift(torch.fft.fft2(psf).abs()).numpy()
    ax_spectrum.imshow(
        np.log10(spectrum + 1e-3 * spectrum.max()),
        cmap="magma",
        origin="lower",
        extent=(-0.5, 0.5, -0.5, 0.5),
    )
    ax_spectrum.set(xlabel="$k_x$ [1/voxel]", ylabel="$k_z$ [1/voxel]")


def volume_explorer(volume: Any, *, value_range=None, image_px: int = 256):
    """Interactive rendering (ipywidgets: view angles, threshold, opacity, colormap).

    Returns the widget, or ``None`` when ipywidgets is not installed or the chapter runs
    headless (``TEM_BOOK_HEADLESS`` set by ``book/run_notebooks.py``; show a static
    figure instead: :func:`show_renderings`). In a built (static) book the widget does not
    run: chapters show a static figure next to it.
    """
    import os

    if os.environ.get("TEM_BOOK_HEADLESS"):
        # run headless by book/run_notebooks.py: ipywidgets.interactive draws into an
        # Output widget at once, which can leave the executor waiting (a fresh-clone
        # `make test` hung there on chapter 07)
        return None
    try:
        import ipywidgets as widgets
    except ImportError:  # pragma: no cover - depends on the install
        return None
    import matplotlib.pyplot as plt

    from tem_core.render import Camera, render, transfer_function

    vol = torch.as_tensor(volume).float()
    if value_range is None:
        lo, hi = _robust_limits(_numpy(vol), (1.0, 99.9))
    else:
        lo, hi = (float(v) for v in value_range)

    def draw(azimuth_deg, elevation_deg, threshold, max_opacity, colormap, perspective):
        camera = Camera(
            image_shape=(image_px, image_px),
            azimuth_rad=math.radians(azimuth_deg),
            elevation_rad=math.radians(elevation_deg),
            projection="perspective" if perspective else "orthographic",
        )
        tf = transfer_function((lo, hi), colormap=colormap, max_opacity=max_opacity)
        image = render(vol, camera, tf, threshold=threshold)
        fig, ax = plt.subplots(figsize=(3.5, 3.5))
        ax.imshow(image[..., :3].clamp(0, 1).numpy())
        ax.axis("off")
        plt.show()

    return widgets.interactive(
        draw,
        azimuth_deg=widgets.FloatSlider(value=30.0, min=-180.0, max=180.0, step=5.0),
        elevation_deg=widgets.FloatSlider(value=20.0, min=-85.0, max=85.0, step=5.0),
        threshold=widgets.FloatSlider(
            value=lo + 0.5 * (hi - lo), min=lo, max=hi, step=(hi - lo) / 50
        ),
        max_opacity=widgets.FloatLogSlider(value=0.2, base=10, min=-2, max=0.5),
        colormap=widgets.Dropdown(options=["magma", "viridis", "gray", "cividis"]),
        perspective=widgets.Checkbox(value=False),
    )


def heatmap_table(
    ax,
    values: Any,
    *,
    row_labels: Sequence[Any],
    col_labels: Sequence[Any],
    label: str,
    fmt: str = "{:.1f}",
    cmap: str = "viridis",
):
    """Draw a ``(rows, cols)`` table as a heat map with each value written in its cell.

    NaN cells stay blank. A colour bar labelled ``label`` is added. Returns the image.
    """
    data = np.asarray(values, dtype=float)
    if data.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values must have shape ({len(row_labels)}, {len(col_labels)}), got {data.shape}"
        )
    im = ax.imshow(data, cmap=cmap, aspect="auto", origin="lower")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize=9,
                color="black" if v > middle else "white",
            )
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.85)
    return im
