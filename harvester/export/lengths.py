"""Pure: the histogram of the exported answers' length in tokens, truncated answers counted apart.

The export counts rows per exact length (at most max_tokens distinct values: flat in the number of rows)
and bins them at the end, so the bins fit the lengths found.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

BINS = 30


def length_histogram(lengths: Counter[tuple[int, bool]], bins: int = BINS) -> dict[str, Any]:
    """{edges, rows, truncated}: rows per bin of completion tokens (edges[i] <= n < edges[i + 1]), and of
    them those cut by max_tokens. `lengths` counts rows by (completion tokens, truncated)."""
    if not lengths:
        return {"edges": [0, 1], "rows": [0], "truncated": [0]}
    top = max(n for n, _ in lengths) + 1
    step = max(1, math.ceil(top / bins))
    count = math.ceil(top / step)
    rows, truncated = [0] * count, [0] * count
    for (n, cut), found in lengths.items():
        rows[n // step] += found
        if cut:
            truncated[n // step] += found
    return {"edges": [i * step for i in range(count + 1)], "rows": rows, "truncated": truncated}
