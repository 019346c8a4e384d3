"""`ActivationObserver`: the statistics an activation quantiser records while it runs in float mode.

QuantLib's ``_PACTActivation`` collects, before it is started: the min/max (an EMA with beta 0.9
after the first batch), an EMA of mean and variance, and a histogram for percentiles. We record the
same, plus the absolute min/max (for min/max calibration), and instead of a rebinned histogram a
bounded random subsample of the values, from which percentile and MSE bounds are computed exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ActivationObserver:
    """Running statistics of the tensors passed to `update` (all under ``torch.no_grad``).

    Attributes (``None`` until the first update):
        min, max: absolute extrema over everything seen.
        ema_min, ema_max: per-batch extrema, ``v <- beta*v + (1-beta)*batch`` after the first batch.
        mean, var: per-batch mean and variance, the same EMA (initialised from the first batch).
        samples: at most `max_samples` values drawn uniformly (seeded) from everything seen, kept
            only while `keep_samples` is true.
    """

    def __init__(self, ema_beta: float = 0.9, keep_samples: bool = False, max_samples: int = 2**18, seed: int = 0):
        self.ema_beta = ema_beta
        self.keep_samples = keep_samples
        self.max_samples = max_samples
        self._gen = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (the settings stay)."""
        self.n_batches = 0
        self.min: Tensor | None = None
        self.max: Tensor | None = None
        self.ema_min: Tensor | None = None
        self.ema_max: Tensor | None = None
        self.mean: Tensor | None = None
        self.var: Tensor | None = None
        self.samples: Tensor | None = None
        self._keys: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.detach().float()
        b_min, b_max, b_mean, b_var = x.min(), x.max(), x.mean(), x.var(unbiased=False)
        if self.n_batches == 0:
            self.min, self.max = b_min, b_max
            self.ema_min, self.ema_max, self.mean, self.var = b_min, b_max, b_mean, b_var
        else:
            # the first batch set every statistic
            assert self.min is not None and self.max is not None and self.ema_min is not None and self.ema_max is not None
            assert self.mean is not None and self.var is not None
            k = self.ema_beta
            self.min, self.max = torch.minimum(self.min, b_min), torch.maximum(self.max, b_max)
            self.ema_min = k * self.ema_min + (1 - k) * b_min
            self.ema_max = k * self.ema_max + (1 - k) * b_max
            self.mean = k * self.mean + (1 - k) * b_mean
            self.var = k * self.var + (1 - k) * b_var
        self.n_batches += 1
        if self.keep_samples:
            self._add_samples(x.reshape(-1).cpu())

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Pool the statistics of every process (torch.distributed), so each holds the same; no-op in one process.

        min/max: exact extrema over all processes; ema_min/ema_max: the extremes of the processes'
        EMAs (the widest); mean/var: the batch-count weighted mean of the means and the pooled
        variance (mean of variances plus variance of means); samples: the union, kept to
        `max_samples` by the largest keys (the same uniform sample as one process would keep);
        n_batches: the sum. A process that saw nothing contributes nothing.
        """
        from qlspec.training.distributed import all_gather_cat, all_reduce_, world

        if world().size == 1:
            return
        seen = self.n_batches > 0
        inf = float("inf")

        def value(t: Tensor | None, empty: float) -> Tensor:
            return t.reshape(1).float().cpu() if seen and t is not None else torch.tensor([empty])

        lows = all_reduce_(
            torch.cat([-value(self.min, inf), -value(self.ema_min, inf), value(self.max, -inf), value(self.ema_max, -inf)]), "max"
        )
        n = float(self.n_batches)
        mean, var = value(self.mean, 0.0), value(self.var, 0.0)
        moments = all_reduce_(torch.cat([torch.tensor([n]), n * mean, n * (var + mean * mean)]).double(), "sum")
        total = int(moments[0])
        if total == 0:
            return
        self.n_batches = total
        self.min, self.ema_min, self.max, self.ema_max = -lows[0], -lows[1], lows[2], lows[3]
        pooled_mean = moments[1] / total
        self.mean = pooled_mean.float()
        self.var = (moments[2] / total - pooled_mean * pooled_mean).clamp_min(0).float()
        if self.keep_samples:
            none = torch.zeros(0)
            flat = all_gather_cat(self.samples if self.samples is not None else none)
            keys = all_gather_cat(self._keys if self._keys is not None else none)
            if flat.numel() > self.max_samples:
                keys, idx = torch.topk(keys, self.max_samples, sorted=False)
                flat = flat[idx]
            self.samples, self._keys = (flat, keys) if flat.numel() else (None, None)

    def _add_samples(self, flat: Tensor) -> None:
        # A weighted random sample without replacement (Efraimidis-Spirakis: keep the largest keys
        # u**(1/w)), so that the kept values are uniform over all batches seen, not biased towards
        # the first or the last ones. A batch larger than max_samples is first subsampled; each of
        # its kept values then stands for (batch size / kept) values.
        n_new = flat.numel()
        if n_new > self.max_samples:
            flat = flat[torch.randint(n_new, (self.max_samples,), generator=self._gen)]
        weight = n_new / flat.numel()
        keys = torch.rand(flat.numel(), generator=self._gen).log() / weight  # log(u**(1/w))
        if self.samples is not None:
            assert self._keys is not None  # kept together with the samples
            flat, keys = torch.cat([self.samples, flat]), torch.cat([self._keys, keys])
        if flat.numel() > self.max_samples:
            keys, idx = torch.topk(keys, self.max_samples, sorted=False)
            flat = flat[idx]
        self.samples, self._keys = flat, keys
