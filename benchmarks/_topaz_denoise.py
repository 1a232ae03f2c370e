"""Pretrained Topaz-Denoise 2-D U-Net on a stack of images (run in the comparison venv).

    /work/main/.venv-compare/bin/python benchmarks/_topaz_denoise.py IN.npz OUT.npz

``IN.npz`` holds ``images`` ``(B, ny, nx)``; ``OUT.npz`` gets ``denoised`` of the same shape.
topaz-em 0.3.20 ships the weights in its wheel (``topaz/pretrained/denoise/``) but its
``load_model('unet')`` fails, so the state dict ``unet_L2_v0.2.2.sav`` is loaded into its
``UDenoiseNet(base_width=11, top_width=5)`` here (the architecture ``load_model`` pairs with
that file). Each image is standardised by its own mean and standard deviation, denoised and
mapped back, as ``topaz.denoise.Denoise._denoise`` does. CPU, float32, no patching.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import topaz
import torch
from topaz.denoising.models import UDenoiseNet

WEIGHTS = Path(topaz.__file__).parent / "pretrained" / "denoise" / "unet_L2_v0.2.2.sav"


def load_unet() -> torch.nn.Module:
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    model = UDenoiseNet(base_width=11, top_width=5)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def denoise(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    out = np.empty_like(images, dtype=np.float32)
    for i, image in enumerate(images):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))
        mu, std = x.mean(), x.std()
        y = model(((x - mu) / std)[None, None])[0, 0]
        out[i] = (y * std + mu).numpy()
    return out


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    images = np.load(src)["images"]
    np.savez(dst, denoised=denoise(load_unet(), images), weights=str(WEIGHTS.name))


if __name__ == "__main__":
    main()
