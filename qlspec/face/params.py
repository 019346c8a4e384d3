"""Parameter normalisation: per-coordinate mean and standard deviation of the 62 parameters.

The network regresses z-scored parameters, ``(param - mean) / std``, as 3DDFA does with
``param_mean_std_62d_120x120.pkl``; `ParamStats` holds the two ``(62,)`` float32 vectors. A
coordinate that never varies in the training set (std < 1e-6 times max(1, |mean|), e.g. a constant
depth offset) gets std 1, so its normalised value is ``param - mean``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from qlspec import atomic

__all__ = ["ParamStats"]


@dataclass(frozen=True, eq=False)
class ParamStats:
    """``mean`` and ``std``, float32 ``(P,)``; `normalise`/`denormalise` take numpy arrays or torch tensors."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean and std must be equal (P,) vectors, got {self.mean.shape}, {self.std.shape}")
        if not np.all(self.std > 0):
            raise ValueError("std must be > 0 everywhere")

    @classmethod
    def from_params(cls, params: np.ndarray) -> ParamStats:
        """Statistics of a training set's ``(N, P)`` parameters (population std, ddof=0)."""
        p = np.asarray(params, np.float64)
        mean, std = p.mean(0), p.std(0)
        std = np.where(std < 1e-6 * np.maximum(1.0, np.abs(mean)), 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def normalise(self, params: Any) -> Any:
        """``(param - mean) / std`` over the last axis; numpy in, numpy out; torch in, torch out."""
        mean, std = self._like(params)
        return (params - mean) / std

    def denormalise(self, z: Any) -> Any:
        """``z * std + mean`` over the last axis; the inverse of `normalise`."""
        mean, std = self._like(z)
        return z * std + mean

    def _like(self, x: Any) -> tuple[Any, Any]:
        if isinstance(x, np.ndarray):
            dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
            return self.mean.astype(dt), self.std.astype(dt)
        import torch

        return (
            torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
            torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``mean`` and ``std`` to one .npz file (atomically: temp file, then rename)."""
        atomic.save_npz(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ParamStats:
        """Read a file written by `save`."""
        with np.load(path) as z:
            return cls(z["mean"].astype(np.float32), z["std"].astype(np.float32))
