"""Pictures for the Dagster UI: a scree plot of the explained variance per stride, embedded in markdown metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np
from dagster import MetadataValue

# One look per stride: colour, marker and line style all differ, and the markers are hollow and shrink from one
# stride to the next, so where the strides' curves coincide (they usually nearly do: a stride only subsamples the
# same windows) the markers sit inside each other and every stride stays visible.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINE_STYLES = ("-", "--", ":", "-.")


def stride_style(index: int, count: int) -> dict:
    """Matplotlib keyword arguments for the ``index``-th of ``count`` strides (sorted), on both panels."""
    return dict(
        color=f"C{index % 10}",
        marker=MARKERS[index % len(MARKERS)],
        linestyle=LINE_STYLES[index % len(LINE_STYLES)],
        markersize=8.0 - 5.0 * index / max(1, count - 1),
        markerfacecolor="none",
        markeredgewidth=1.2,
        linewidth=1.3,
    )


def scree_plot_png(ratios_by_stride: Mapping[int, np.ndarray]) -> bytes:
    """A PNG (640 x 320 px): explained variance ratio per component (log scale) and cumulative, each stride
    with its own colour, marker and line style, and one legend above both panels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(8, 4), dpi=80)
    ratio_axes = figure.add_subplot(1, 2, 1)
    cumulative_axes = figure.add_subplot(1, 2, 2)
    for index, (stride, ratio) in enumerate(sorted(ratios_by_stride.items())):
        ratio = np.asarray(ratio, dtype=float)
        components = np.arange(1, len(ratio) + 1)
        style = dict(
            stride_style(index, len(ratios_by_stride)), markevery=max(1, len(ratio) // 32), label=f"stride {stride}"
        )
        ratio_axes.plot(components, ratio, **style)
        cumulative_axes.plot(components, np.cumsum(ratio), **style)
    ratio_axes.set(title="explained variance ratio", xlabel="component", yscale="log")
    cumulative_axes.set(title="cumulative", xlabel="component", ylim=(0, 1.02))
    handles, labels = ratio_axes.get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="upper center",
        ncol=max(1, min(len(labels), 7)),
        frameon=False,
        fontsize="small",
        handlelength=3.0,
        borderaxespad=0.3,
    )
    for axes in (ratio_axes, cumulative_axes):
        axes.grid(alpha=0.3)
    # fixed margins, room for log-scale labels such as 6 x 10^-2 and for the legend above the panels:
    # tight_layout drew the figure a second time just to measure its text
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.84, wspace=0.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def scree_plot_metadata(ratios_by_stride: Mapping[int, np.ndarray]) -> MetadataValue:
    """The scree plot as markdown the UI renders (an inline PNG)."""
    encoded = base64.b64encode(scree_plot_png(ratios_by_stride)).decode("ascii")
    return MetadataValue.md(f"![explained variance per component, per stride](data:image/png;base64,{encoded})")
