"""A short account of a graph: ops, MACs, weight bytes, activation memory before and after planning."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qlspec.engine.ops import op_for
from qlspec.graph.ir import Graph
from qlspec.graph.memory_plan import plan_memory


@dataclass(frozen=True)
class Summary:
    name: str
    nodes: int
    op_counts: dict[str, int]
    macs: int
    weight_bytes: int  # all constants, in their integer containers
    activation_bytes_naive: int  # every activation in its own buffer
    activation_bytes_planned: int  # the static memory plan's arena
    activation_bytes_lower_bound: int  # most bytes alive at one step
    inputs: dict[str, str]
    outputs: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        saved = 1 - self.activation_bytes_planned / self.activation_bytes_naive if self.activation_bytes_naive else 0.0
        return "\n".join(
            [
                f"graph {self.name}: {self.nodes} nodes ({ops})",
                f"inputs {', '.join(f'{k} {v}' for k, v in self.inputs.items())}; "
                f"outputs {', '.join(f'{k} {v}' for k, v in self.outputs.items())}",
                f"MACs {self.macs:,}; weights {self.weight_bytes:,} bytes",
                f"peak activation memory {self.activation_bytes_planned:,} bytes with the memory plan, "
                f"{self.activation_bytes_naive:,} without ({saved:.0%} saved; lower bound {self.activation_bytes_lower_bound:,})",
            ]
        )


def summarise(g: Graph) -> Summary:
    macs = 0
    for n in g.nodes:
        ins = [g.tensors[t] if t else None for t in n.inputs]
        macs += op_for(n).macs(ins, [g.tensors[t] for t in n.outputs])
    plan = plan_memory(g)
    return Summary(
        name=g.name,
        nodes=len(g.nodes),
        op_counts=g.op_counts(),
        macs=macs,
        weight_bytes=sum(int(a.nbytes) for a in g.constants.values()),
        activation_bytes_naive=plan.naive_bytes,
        activation_bytes_planned=plan.arena_bytes,
        activation_bytes_lower_bound=plan.peak_live_bytes,
        inputs={t: g.tensors[t].describe() for t in g.inputs},
        outputs={t: g.tensors[t].describe() for t in g.outputs},
    )
