"""The files a spec names, opened and checked before any stage runs (`qlspec validate`, `plan`, `apply`).

Loading a spec checks only that a named file exists; this reads the ones whose content can be
judged without a stage: the checkpoint in ``network.pretrained`` must fit the network the spec
builds (keys and shapes, by the same function the train stage loads it with), and the output
normalisation in ``network.param_stats`` must hold 62 means and 62 positive standard deviations.
Each problem is one located line, ``app.yaml:LINE:COL: network.pretrained: message``.
"""

from __future__ import annotations

from qlspec.errors import QlspecError, SpecError
from qlspec.spec.load import LoadedSpec, _display


def check_named_files(loaded: LoadedSpec) -> None:
    """Raise `SpecError` with one located line per named file that cannot serve its field."""
    network = loaded.spec.network
    problems: list[tuple[str | None, str]] = []
    if network.pretrained is not None:
        import torch

        from qlspec.nets import registry
        from qlspec.nets.checkpoint import fitting_state_dict

        with torch.device("meta"):  # shapes only: no weights are drawn or written
            net = registry.build(network.arch, network.width)
        try:
            fitting_state_dict(net, network.pretrained)
        except QlspecError as e:
            problems.append(_located(loaded, ("network", "pretrained"), e.message))
    if network.param_stats is not None and not hasattr(network.param_stats, "mean"):
        from qlspec.face.bfm import param_stats_from_file

        try:
            param_stats_from_file(network.param_stats)
        except QlspecError as e:
            problems.append(_located(loaded, ("network", "param_stats"), e.message))
    if problems:
        raise SpecError.many(problems)


def _located(loaded: LoadedSpec, at: tuple[str, ...], message: str) -> tuple[str | None, str]:
    where = loaded.source.values.get(at)
    return (str(where) if where else _display(loaded.path), f"{'.'.join(at)}: {message}")
