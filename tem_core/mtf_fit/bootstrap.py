"""Parametric bootstrap of Whittle MTF fits, conditional on the fit's scale path.

See :meth:`tem_core.mtf_fit.MTFFit.bootstrap_replicas`. Why the replicas are cut from
simulated micrographs and kept on the fit's path: a fit of periodic simulated crops has
no leakage to correct, so the debiased Whittle fit puts the spectrum's scale high (mean
1.8 standard errors for 256 crops of 64² of the well-determined camera); its agreement
check with the count lattice's scale (``z``, lattice against spectrum: mean −1.84, s.d.
0.79 over 40 refits) then refused the lattice in 3 of 40 refits, whose scale came from
the spectrum (18 % off), and the bootstrap spread of ``s`` and the widths was bimodal.
Crops cut from micrographs twice their size: ``z`` mean −0.01, s.d. 0.91, none refused
(crop sets drawn from the truth: −0.09, 0.87, none). Replicas that still leave the fit's
path are discarded and redrawn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from tem_core.mtf_fit.result import MTFFit
from tem_core.validation import require_integer


@dataclass(frozen=True, kw_only=True, eq=False)
class BootstrapReplicas:
    """Refits of a parametric bootstrap (:meth:`MTFFit.bootstrap_replicas`).

    Attributes
    ----------
    values
        Per quantity (:attr:`MTFFit.covariance_names` and ``"MTF(0.25)"``), the refits'
        estimates, one per kept replica.
    path
        The fit's :attr:`MTFFit.scale_path`, which every kept replica took.
    discarded
        Replicas simulated and refitted but not kept: their refit took another path.
    discarded_reasons
        Why each was discarded (the refit's note on the Poisson scale).
    """

    values: dict[str, tuple[float, ...]]
    path: str
    discarded: int = 0
    discarded_reasons: tuple[str, ...] = ()

    @property
    def standard_errors(self) -> dict[str, float]:
        """Standard deviation (``n − 1``) of each quantity over the kept replicas."""
        return {
            k: float(torch.tensor(v, dtype=torch.float64).std()) for k, v in self.values.items()
        }


def bootstrap_replicas(fit: MTFFit, n: int, *, generator: torch.Generator) -> BootstrapReplicas:
    """:meth:`MTFFit.bootstrap_replicas` (which documents it)."""
    from tem_core.mtf_fit.whittle import fit_mtf_whittle  # read at call time (tests patch it)

    if fit.method != "whittle" or fit.refit_settings is None:
        raise ValueError("bootstrap needs a Whittle fit (fit_mtf_whittle)")
    n = require_integer("n", n, 2)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    settings = dict(fit.refit_settings)
    shape, mean = settings.pop("shape"), settings.pop("mean_counts")
    path = fit.scale_path
    if path == "spectrum":
        settings["poisson_skewness"] = False
    names = list(fit.covariance_names) or [*fit.params, "s"]
    omega = torch.tensor([0.25], dtype=torch.float64)
    values: dict[str, list[float]] = {k: [] for k in (*names, "MTF(0.25)")}
    discarded: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refits' precision and lattice warnings
        while len(values["MTF(0.25)"]) < n:
            crops = fit.simulate_background(
                shape, mean_counts=mean, generator=generator, cut_from_micrographs=True
            )
            refit = fit_mtf_whittle(crops.cpu(), **settings)
            if path == "count lattice" and refit.poisson is None:
                reason = refit.model.reason if refit.model is not None else ""
                discarded.append(reason.rsplit("; ", 1)[-1])
                if len(discarded) > n:
                    raise RuntimeError(
                        f"bootstrap: {len(discarded)} of "
                        f"{len(discarded) + len(values['MTF(0.25)'])} "
                        "replicas simulated from this fit did not take its path (the NPS "
                        f"scale from the count lattice); the last: {discarded[-1]!r}. The "
                        "lattice decision is not stable for this model: refit with "
                        "poisson_skewness=False to bootstrap the spectrum's scale"
                    )
                continue
            for k in names:
                values[k].append(refit.scale if k == "s" else refit.params[k])
            values["MTF(0.25)"].append(float(refit.noise_transfer(omega)))
    return BootstrapReplicas(
        values={k: tuple(v) for k, v in values.items()},
        path=path,
        discarded=len(discarded),
        discarded_reasons=tuple(discarded),
    )
