"""Pictures for the Dagster UI: a scree plot of the explained variance per stride, embedded in markdown metadata."""

from __future__ import annotations

import base64
import io
from typing import Mapping

import numpy as np
from dagster import MetadataValue


def scree_plot_png(ratios_by_stride: Mapping[int, np.ndarray]) -> bytes:
    """A PNG (about 640 x 320 px): explained variance ratio per component (bars' outline) and cumulative (line),
    one colour per stride."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(8, 4), dpi=80)
    ratio_axes = figure.add_subplot(1, 2, 1)
    cumulative_axes = figure.add_subplot(1, 2, 2)
    for stride, ratio in sorted(ratios_by_stride.items()):
        components = np.arange(1, len(ratio) + 1)
        ratio_axes.plot(components, ratio, marker=".", label=f"stride {stride}")
        cumulative_axes.plot(components, np.cumsum(ratio), label=f"stride {stride}")
    ratio_axes.set(title="explained variance ratio", xlabel="component", yscale="log")
    cumulative_axes.set(title="cumulative", xlabel="component", ylim=(0, 1.02))
    cumulative_axes.legend(loc="lower right", fontsize="small")
    for axes in (ratio_axes, cumulative_axes):
        axes.grid(alpha=0.3)
    # fixed margins, room for log-scale labels such as 6 x 10^-2: tight_layout drew the figure once more to
    # measure its text, 0.2 s of the 0.4 s the first plot of a process took
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.92, wspace=0.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def scree_plot_metadata(ratios_by_stride: Mapping[int, np.ndarray]) -> MetadataValue:
    """The scree plot as markdown the UI renders (an inline PNG)."""
    encoded = base64.b64encode(scree_plot_png(ratios_by_stride)).decode("ascii")
    return MetadataValue.md(f"![explained variance per component, per stride](data:image/png;base64,{encoded})")
