"""Reconstruction quality of invert → generate: MSE, PSNR and SSIM on images in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# reconstruct_fn(images in [-1, 1], (B, C, H, W)) -> reconstructions in [0, 1], (B, C, H, W)
ReconstructFn = Callable[[torch.Tensor], torch.Tensor]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.ndim != 4 or a.shape[0] == 0:
        raise ValueError(
            f"`images` and `reconstructions` must be non-empty (B, C, H, W) batches of one shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )
    return a.double(), b.double()


def mse(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error, `(B,)`."""
    a, b = _check_pair(images, reconstructions)
    return (a - b).square().flatten(1).mean(1)


def psnr(images: torch.Tensor, reconstructions: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, `10 log10(data_range² / MSE)`, `(B,)` (`inf` for identical images)."""
    err = mse(images, reconstructions)
    return 10.0 * torch.log10(data_range**2 / err)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    r"""
    Per-image structural similarity (Wang et al. 2004): Gaussian window (11, σ = 1.5), constants `C1 = (k1 L)²`,
    `C2 = (k2 L)²`, computed per channel over the valid (unpadded) positions and averaged. The window shrinks to
    the image size for images smaller than it.

    Returns:
        `torch.Tensor`: `(B,)` SSIM in [-1, 1].
    """
    a, b = _check_pair(images, reconstructions)
    size = min(window_size, a.shape[-1], a.shape[-2])
    channels = a.shape[1]
    window = _gaussian_window(size, sigma)[None, None].expand(channels, 1, size, size)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def compare_images(images: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, float]:
    """Mean MSE, PSNR (mean of per-image dB over the finite values; `inf` if all are identical) and SSIM of two
    `(N, C, H, W)` batches in [0, 1]."""
    per_mse, per_psnr, per_ssim = (
        mse(images, reconstructions),
        psnr(images, reconstructions),
        ssim(images, reconstructions),
    )
    finite = per_psnr[torch.isfinite(per_psnr)]
    return {
        "mse": float(per_mse.mean()),
        "psnr": float(finite.mean()) if finite.numel() else math.inf,
        "ssim": float(per_ssim.mean()),
    }


def reconstruct(reconstruct_fn: ReconstructFn, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Runs `reconstruct_fn` over `(N, C, H, W)` images in [-1, 1] in batches; returns `(N, C, H, W)` in [0, 1]."""
    images = torch.as_tensor(images).float()
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"`images` must be a non-empty (N, C, H, W) batch, got {tuple(images.shape)}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    out = []
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i : i + batch_size]
        rec = torch.as_tensor(reconstruct_fn(chunk)).float().cpu()
        if rec.shape != chunk.shape:
            raise ValueError(f"`reconstruct_fn` returned shape {tuple(rec.shape)} for inputs {tuple(chunk.shape)}.")
        out.append(rec)
    return torch.cat(out)


def reconstruction_metrics(
    reconstruct_fn: ReconstructFn,
    images: torch.Tensor,
    batch_size: int = 32,
    num_inference_steps: int | None = None,
) -> dict[str, float | int | None]:
    r"""
    Reconstructs `images` and reports mean MSE, PSNR and SSIM on [0, 1] pixels (see [`compare_images`]).

    Args:
        reconstruct_fn (`Callable`): `(B, C, H, W)` images in [-1, 1] → reconstructions in [0, 1].
        images (`torch.Tensor`): `(N, C, H, W)` in [-1, 1].
        batch_size (`int`, defaults to 32): Images per call.
        num_inference_steps (`int`, *optional*): Recorded in the result (the DDIM steps `reconstruct_fn` uses).
    """
    recon = reconstruct(reconstruct_fn, images, batch_size)
    target = (torch.as_tensor(images).float() / 2 + 0.5).clamp(0, 1)
    return {
        "num_images": int(recon.shape[0]),
        "num_inference_steps": num_inference_steps,
        **compare_images(target, recon),
    }
