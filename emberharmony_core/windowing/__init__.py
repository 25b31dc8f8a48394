"""Where stride windows are: the one rule, used by the statistics, the projection, the stored
index and the checks.

The rule
--------
Per entity (never across entities), an entity's rows in time order are numbered t = 0, 1, 2, ...
over its whole series (every partition, in order). The stride-``s`` window ending on row ``t``
holds rows ``t - w + 1 .. t`` and exists when ``t >= w - 1`` and ``(t - w + 1) % s == 0``: windows
start at rows 0, s, 2s, ... of the entity's series, exactly what ``stride_windows`` gives on that
entity's series alone (the seed's rule). A window whose rows carry different splits is dropped
(counted). Each window belongs to the chunk, and so to the partition, holding its last row.

Why this rule: it depends neither on how rows are chunked nor on how time is partitioned
(the same windows whatever ``rows_per_chunk`` or the partition granularity), and it needs from
the past only a small carry per entity (how many rows it has had, and its last ``w - 1`` rows),
so a window reaches back over as many partitions as it must (an entity with one row a day still
gets its windows). The price: an old partition that gains or loses rows shifts the stride phase
of the entity's later windows, so later partitions must be re-materialised (Dagster shows them
stale through the carry's dependency).

Gaps (``max_gap``, off by default)
----------------------------------
With ``max_gap`` set (a duration), a window two of whose consecutive rows are more than
``max_gap`` apart (``time[i + 1] - time[i] > max_gap``, strictly) is not made: it is dropped from
the windows the rule above finds, and counted (``gap_dropped[s]``). Only that: the stride phase is
the entity's whole-series phase as without ``max_gap``, and no other window moves. Windows that
mix splits are counted first (``mixed_split_dropped``); ``gap_dropped`` counts the remaining ones
that span a gap, so ``kept = candidates - mixed_split_dropped - gap_dropped`` exactly.

Why drop rather than restart the phase at each gap, and why off by default: docs/windowing.md.

    windower = Windower(window_size=5, strides=(1, 3, 5), carry=None)   # or the previous partition's carry
    for chunk in chunks:                                                 # ChunkRows, grouped by entity (ascending)
        made = windower.add(chunk, backend)                              # ChunkWindows
        stats = window_stats(made, stride=3)          # features.pca: PCAStats of its train windows
        projected = project_windows(made, 3, model)                      # (m, k) backend array
    carry = windower.finish()                                            # WindowCarry for the next partition

The carry streams: ``Windower`` reads the previous one and writes the next one (``sink``) in entity key
order alongside the chunks, so its memory is a chunk's entities, not every entity's (a day of 1,000,000
sensors with 3 rows each carried 0.6 GiB of rows in memory before; see ``layout.StoredCarry``).

The package: ``rule`` (split codes, durations, the closed-form count, one series' starts), ``carry`` (``WindowCarry``,
its cursor and key order), ``windower`` (``Windower``, ``ChunkRows``, ``ChunkWindows``), ``projection`` (gathering
and projecting windows, the window index, Arrow columns).
"""

from .carry import WindowCarry, check_key_order
from .projection import columns_table, gather_windows, project_windows, window_index
from .rule import SPLITS, TRAIN, count_windows, parse_duration, series_starts, split_codes
from .windower import ChunkRows, ChunkWindows, Windower, chunk_rows, entity_blocks

__all__ = [
    "SPLITS",
    "TRAIN",
    "check_key_order",
    "entity_blocks",
    "ChunkRows",
    "ChunkWindows",
    "WindowCarry",
    "Windower",
    "chunk_rows",
    "columns_table",
    "count_windows",
    "gather_windows",
    "parse_duration",
    "project_windows",
    "series_starts",
    "split_codes",
    "window_index",
]
