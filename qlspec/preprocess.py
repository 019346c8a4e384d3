"""From stored images to the network input, and the input quantiser that follows from it.

The data stage stores uint8 images ``(N, H, W, 3)`` in BGR order (3DDFA's). The spec's ``preprocess``
says what the network sees: ``channel_order`` (BGR as stored, or RGB) and ``normalise``
(``x = (p - mean) / std`` per channel, in float32). Training, QAT, evaluation, F2T, the convert stage
(and next the C++ pre-processing) all go through `InputTransform`, so changing either field changes
every stage from ``train`` on, as `qlspec diff` says.

The input quantiser is derived, not configured (`qlspec.input_grid`, re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass

from qlspec.input_grid import InputGrid, input_grid


@dataclass(frozen=True)
class InputTransform:
    """uint8 images ``(N, H, W, 3)`` in stored (BGR) order -> float32 ``(N, 3, H, W)``: the channel
    order the network wants, then ``(p - mean) / std`` in float32."""

    mean: float = 127.5
    std: float = 128.0
    rgb: bool = False

    @classmethod
    def from_spec(cls, preprocess) -> InputTransform:
        return cls(float(preprocess.normalise.mean), float(preprocess.normalise.std), preprocess.channel_order == "RGB")

    @property
    def grid(self) -> InputGrid:
        return input_grid(self.mean, self.std)

    def __call__(self, images):
        import torch

        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {x.dtype} {tuple(x.shape)}")
        if self.rgb:
            x = x.flip(-1)
        return (x.permute(0, 3, 1, 2).to(torch.float32) - self.mean) / self.std


#: 3DDFA's own input: BGR, (p - 127.5) / 128.
DEFAULT = InputTransform()
