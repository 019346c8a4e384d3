"""Wall time of `qlspec apply`, per stage: from scratch, a no-op re-apply, and a re-apply after a change
that only the last stages read; with the peak memory of the from-scratch run.

The spec is resolved once (`extends:` merged, defaults filled in) and written as one file into a
fresh temporary folder, where it is applied as a user would (`python -m qlspec apply ... --no-progress`,
a new process each time, build folder in that temporary folder):

1. from scratch: the wall time of the command and each stage's own `seconds` from its record
   (build/<name>/<stage>/stage.json); peak memory is the largest resident set of the apply process
   or any process it started (ru_maxrss of the children), and per stage the largest resident set of
   the apply process and its descendants together, sampled every `SAMPLE_S` seconds while the stage
   runs (the stage is the one apply last printed as "running");
2. no-op: the same command again (median of `--repeats`): every stage up to date;
3. changed: `--change FIELD=VALUE` (default ``target.output_stage=armcl-native``, which only the
   build and verify stages read), then apply: the stages that reran and their seconds.

By default the spec is a tiny app (MobileNet-V1 x0.25, 96 training images, one epoch: a few
minutes); `--spec examples/3ddfa-synthetic/app.yaml` times the default app.

    python bench/apply.py [--spec SPEC] [--change target.output_stage=armcl-native] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

TINY = """\
apiVersion: qlspec/v1
name: bench-tiny
extends: [boards/rpi4.yaml, networks/3ddfa-mb05.yaml]
network: {width: 0.25}
data: {kind: synthetic, train: 96, val: 32, seed: 3}
training: {epochs: 1, batch_size: 32, threads: 2}
quantisation: {algorithm: pact, schedule: {epochs: 1, freeze_clip_at: null, lr: 0.001}}
verify: {samples: 16}
"""


def resolved(spec: Path) -> dict[str, Any]:
    from qlspec.spec.load import load_spec, resolved_dict

    return resolved_dict(load_spec(spec))


def changed(spec: dict[str, Any], assignment: str) -> dict[str, Any]:
    """A copy of `spec` with FIELD=VALUE applied (VALUE read as YAML: numbers, booleans, strings)."""
    field, _, value = assignment.partition("=")
    out = json.loads(json.dumps(spec))
    *parents, leaf = field.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = YAML(typ="safe").load(value)
    return out


SAMPLE_S = 0.1


def apply(folder: Path, spec: dict[str, Any], peaks: dict[str, int] | None = None) -> tuple[float, str]:
    """Write `spec` as folder/app.yaml and apply it there; (wall seconds, stdout). With `peaks`, fill it
    with each stage's largest resident set (bytes) of the apply process tree, sampled."""
    (folder / "app.yaml").write_text(json.dumps(spec, indent=1) + "\n")  # JSON is YAML
    command = [sys.executable, "-m", "qlspec", "apply", "app.yaml", "--build-dir", "build", "--no-progress"]
    t0 = time.perf_counter()
    p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
    lines: list[str] = []
    stage = ["(start-up)"]

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            words = line.split()
            if len(words) > 1 and words[1] in ("running:", "done"):
                stage[0] = words[0] if words[1] == "running:" else "(between stages)"

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while p.poll() is None:
        if peaks is not None:
            peaks[stage[0]] = max(peaks.get(stage[0], 0), tree_rss(p.pid))
        time.sleep(SAMPLE_S)
    reader.join()
    seconds = time.perf_counter() - t0
    out, err = "".join(lines), p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        sys.exit(f"qlspec apply failed (exit {p.returncode}):\n{out}{err}")
    return seconds, out


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants now (0 for those gone meanwhile)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = int(fields[21]) * page
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        total += rss.get(q, 0)
        todo.extend(children.get(q, []))
    return total


def stage_seconds(build: Path, stages: list[str]) -> dict[str, float]:
    return {s: json.loads((build / s / "stage.json").read_text())["seconds"] for s in stages}


def ran(stdout: str) -> list[str]:
    """The stages `qlspec apply` printed as done, in order."""
    return [line.split()[0] for line in stdout.splitlines() if len(line.split()) > 1 and line.split()[1] == "done"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=None, help="the spec to time (default: a tiny app)")
    ap.add_argument("--change", default="target.output_stage=armcl-native", help="FIELD=VALUE for the third apply")
    ap.add_argument("--repeats", type=int, default=3, help="no-op re-applies (median)")
    ap.add_argument("--keep", type=Path, default=None, help="apply in this new or empty folder, kept afterwards")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="qlspec-bench-apply-") as tmp_name:
        tmp = Path(tmp_name)
        if args.spec is None:
            (tmp / "tiny.yaml").write_text(TINY)
        spec = resolved(args.spec or tmp / "tiny.yaml")
        folder = args.keep or tmp / "app"
        if folder.exists() and any(folder.iterdir()):
            sys.exit(f"{folder} is not empty: --keep takes a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        build = folder / "build" / spec["name"]

        peaks: dict[str, int] = {}
        wall, out = apply(folder, spec, peaks)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        per_stage = stage_seconds(build, ran(out))
        source = str(args.spec) if args.spec else "tiny app (bench/apply.py's TINY)"
        print(f"qlspec apply of {source}, {spec['training']['threads']} training thread(s)")
        print(f"{'from scratch':28s} {wall:8.1f} s wall, peak memory {peak_mib:,.0f} MiB")
        for stage, s in per_stage.items():
            print(f"  {stage:26s} {s:8.1f} s  {100 * s / wall:5.1f}%   peak {peaks.get(stage, 0) / 2**20:7,.0f} MiB (process tree)")
        print(f"  {'(start-up, planning, report)':26s} {wall - sum(per_stage.values()):8.1f} s", flush=True)

        noops = [apply(folder, spec) for _ in range(args.repeats)]
        noop_ran = sorted({s for _, o in noops for s in ran(o)})
        noop = statistics.median(t for t, _ in noops)
        print(f"{'no-op re-apply':28s} {noop:8.2f} s wall (median of {args.repeats}){'; RAN ' + ', '.join(noop_ran) if noop_ran else ''}")
        wall_change, out_change = apply(folder, changed(spec, args.change))
        reran = ran(out_change)
        print(f"{'after ' + args.change:28s} {wall_change:8.1f} s wall, reran {', '.join(reran) or 'nothing'}")
        for stage, s in stage_seconds(build, reran).items():
            print(f"  {stage:26s} {s:8.1f} s")


if __name__ == "__main__":
    main()
