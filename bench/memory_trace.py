"""Where a qlspec command's memory goes: run the CLI in this process while a thread samples its
resident set, and print a timeline (each time the resident set crosses another 100 MiB, or the qlspec
code running changes) and the stack at the peak.

    python bench/memory_trace.py apply app.yaml --force quantise --until quantise --no-progress

Only this process is sampled: training processes spawned by ``training.distributed`` are not.
`bench/apply.py` gives each stage's peak over the whole process tree.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback

SAMPLE_S = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")
MAIN = threading.main_thread().ident or 0


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def stack() -> list[traceback.FrameSummary]:
    frame = sys._current_frames().get(MAIN)
    return traceback.extract_stack(frame) if frame is not None else []


def ours(frames: list[traceback.FrameSummary], depth: int = 3) -> str:
    """The innermost `depth` frames of qlspec's own code, outermost first."""
    mine = [f for f in frames if f"{os.sep}qlspec{os.sep}" in f.filename]
    return " > ".join(f"{f.filename.rsplit(os.sep + 'qlspec' + os.sep, 1)[-1]}:{f.name}" for f in mine[-depth:])


def main() -> None:
    t0 = time.monotonic()
    peak: list = [0, []]

    def sample() -> None:
        last = None
        while True:
            rss, frames = resident(), stack()
            if rss > peak[0]:
                peak[0], peak[1] = rss, frames
            key = (ours(frames), (rss >> 20) // 100)
            if key != last:
                print(f"{time.monotonic() - t0:8.1f} s {rss / 2**20:7,.0f} MiB  {key[0]}", file=sys.stderr, flush=True)
                last = key
            time.sleep(SAMPLE_S)

    def report() -> None:
        print(f"peak {peak[0] / 2**20:,.0f} MiB at:", file=sys.stderr)
        for f in peak[1][-12:]:
            print(f"  {f.filename}:{f.lineno} {f.name}: {f.line}", file=sys.stderr)

    threading.Thread(target=sample, daemon=True).start()
    atexit.register(report)
    sys.argv = ["qlspec", *sys.argv[1:]]
    from qlspec.cli import main as qlspec_main

    qlspec_main()


if __name__ == "__main__":
    main()
