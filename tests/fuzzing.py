"""How many examples the hostile-input property tests generate: their CI default times
$QLSPEC_FUZZ (1 unless set), so a longer fuzzing run is `QLSPEC_FUZZ=20 python3 -m pytest -k hostile
--hypothesis-show-statistics`, which prints each test's number of generated cases."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    try:
        scale = max(1, int(os.environ.get("QLSPEC_FUZZ", "1")))
    except ValueError:
        scale = 1
    return n * scale
