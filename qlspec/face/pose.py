"""Head pose (yaw, pitch, roll) from the 12 pose parameters, with 3DDFA_V2's ``utils/pose.py`` semantics.

``P = param[:12].reshape(3, 4)``; ``r1, r2`` = the first two rows of ``P[:, :3]``, each normalised;
``r3 = r1 x r2``; ``R = [r1; r2; r3]``. Then (3DDFA ``matrix2angle``):

- if ``R[2, 0] > 0.998``: yaw = +90, roll = 0, pitch = ``atan2(-R[0, 1], -R[0, 2])``;
- if ``R[2, 0] < -0.998``: yaw = -90, roll = 0, pitch = ``atan2(R[0, 1], R[0, 2])``;
- else yaw = ``asin(R[2, 0])``, pitch = ``atan2(R[2, 1], R[2, 2])``, roll = ``atan2(R[1, 0], R[0, 0])``
  (3DDFA divides both atan2 arguments by ``cos(yaw) > 0``, which does not change the result).

All angles in degrees. The scale ``s = (|P[0, :3]| + |P[1, :3]|) / 2`` is returned by `scale`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scale", "yaw_deg", "yaw_pitch_roll"]

_GIMBAL = 0.998


def _rotation(params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, np.float64)[:, :12].reshape(-1, 3, 4)
    r1 = p[:, 0, :3] / np.linalg.norm(p[:, 0, :3], axis=1, keepdims=True)
    r2 = p[:, 1, :3] / np.linalg.norm(p[:, 1, :3], axis=1, keepdims=True)
    return np.stack([r1, r2, np.cross(r1, r2)], 1)


def yaw_pitch_roll(params: np.ndarray) -> np.ndarray:
    """``(N, >=12)`` parameters -> ``(N, 3)`` float64 (yaw, pitch, roll) in degrees, as 3DDFA."""
    r = _rotation(params)
    r20 = r[:, 2, 0]
    yaw = np.arcsin(np.clip(r20, -1.0, 1.0))
    pitch = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    roll = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    hi, lo = r20 > _GIMBAL, r20 < -_GIMBAL
    yaw = np.where(hi, np.pi / 2, np.where(lo, -np.pi / 2, yaw))
    roll = np.where(hi | lo, 0.0, roll)
    pitch = np.where(hi, np.arctan2(-r[:, 0, 1], -r[:, 0, 2]), pitch)
    pitch = np.where(lo, np.arctan2(r[:, 0, 1], r[:, 0, 2]), pitch)
    return np.degrees(np.stack([yaw, pitch, roll], 1))


def yaw_deg(params: np.ndarray) -> np.ndarray:
    """``(N, >=12)`` parameters -> ``(N,)`` yaw in degrees (3DDFA's ``asin(R[2, 0])``, +-90 at gimbal lock)."""
    return yaw_pitch_roll(params)[:, 0]


def scale(params: np.ndarray) -> np.ndarray:
    """``(N, >=12)`` parameters -> ``(N,)`` scale ``(|P[0, :3]| + |P[1, :3]|) / 2`` (pixels per model unit)."""
    p = np.asarray(params, np.float64)[:, :12].reshape(-1, 3, 4)
    return (np.linalg.norm(p[:, 0, :3], axis=1) + np.linalg.norm(p[:, 1, :3], axis=1)) / 2
