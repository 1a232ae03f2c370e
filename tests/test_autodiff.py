"""tem_core._autodiff.autograd_follows: the one test behind the in-place paths."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwad

from tem_core._autodiff import autograd_follows


def test_autograd_follows_each_mode_and_ignores_non_tensors() -> None:
    plain = torch.ones(3, dtype=torch.float64)
    leaf = torch.ones(3, dtype=torch.float64, requires_grad=True)
    assert not autograd_follows(plain, None, 2.0, "text")
    assert autograd_follows(plain, leaf)
    with torch.no_grad():
        assert not autograd_follows(leaf)  # reverse mode records nothing here
    with fwad.dual_level():
        assert autograd_follows(None, fwad.make_dual(plain, torch.ones_like(plain)))
    seen = []
    torch.func.vmap(lambda x: seen.append(autograd_follows(x)) or x)(plain[:, None])
    assert seen == [True]
