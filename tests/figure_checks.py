"""Layout checks for the figures cnnzoo writes: a title, labelled axes, and no two texts on top
of each other (tick labels, axis labels, titles, legend entries, annotations), measured with the
window extents matplotlib's own renderer gives each text (the same boxes `bbox_inches="tight"`
uses), so the check sees what a reader sees in the PNG.
"""

from __future__ import annotations

from typing import Any

# Boxes may touch; a couple of pixels of shared antialiased edge is not an overlap a reader sees.
TOLERANCE_PX = 1.5


def _visible(text: Any) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _tick_labels(axis: Any) -> list[Any]:
    low, high = sorted(axis.get_view_interval())
    labels = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        # Ticks outside the view are laid out but not drawn.
        if low - 1e-12 * abs(low) <= tick.get_loc() <= high + 1e-12 * abs(high):
            labels += [t for t in (tick.label1, tick.label2) if _visible(t)]
    return labels


def figure_texts(fig: Any) -> list[tuple[str, Any]]:
    """(what, text artist) for every visible text of the figure."""
    fig.canvas.draw()
    out = []
    if fig._suptitle is not None and _visible(fig._suptitle):
        out.append(("suptitle", fig._suptitle))
    out += [("figure text", t) for t in fig.texts if _visible(t) and t is not fig._suptitle]
    for legend in fig.legends:
        out += [("legend", t) for t in legend.get_texts() if _visible(t)]
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            out += [(f"axes {i} {which} tick", t) for t in _tick_labels(axis)]
            if _visible(axis.label):
                out.append((f"axes {i} {which} label", axis.label))
            if _visible(axis.offsetText):
                out.append((f"axes {i} {which} offset", axis.offsetText))
        for title in (ax.title, ax._left_title, ax._right_title):
            if _visible(title):
                out.append((f"axes {i} title", title))
        legend = ax.get_legend()
        if legend is not None:
            out += [(f"axes {i} legend", t) for t in legend.get_texts() if _visible(t)]
        out += [(f"axes {i} text", t) for t in ax.texts if _visible(t)]
    return out


def overlapping_texts(fig: Any) -> list[str]:
    """Pairs of texts whose drawn boxes overlap, named for the failure message."""
    renderer = fig.canvas.get_renderer()
    boxes = [(what, t.get_text(), t.get_window_extent(renderer)) for what, t in figure_texts(fig)]
    bad = []
    for i, (w1, s1, b1) in enumerate(boxes):
        for w2, s2, b2 in boxes[i + 1 :]:
            dx = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
            dy = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
            if dx > TOLERANCE_PX and dy > TOLERANCE_PX:
                bad.append(f"{w1} {s1!r} overlaps {w2} {s2!r}")
    return bad


def check_figure(fig: Any, *, axes_labels: bool = True) -> None:
    """A title (the figure's or every panel's), x and y labels on every panel (`axes_labels`:
    False for a picture with its axes turned off) and no overlapping text."""
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    has_title = fig._suptitle is not None and _visible(fig._suptitle)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert has_title or all(_visible(ax.title) for ax in shown), "the figure has no title"
    if axes_labels:
        assert panels, "the figure has no labelled panel"
        for ax in panels:
            # A panel sharing its y axis with a labelled neighbour (sharey=True) needs no label of its own.
            shared = [o for o in panels if o is not ax and ax.get_shared_y_axes().joined(ax, o)]
            y_named = _visible(ax.yaxis.label) or any(_visible(o.yaxis.label) for o in shared)
            assert _visible(ax.xaxis.label) and y_named, f"unlabelled axes in {ax}"
    overlaps = overlapping_texts(fig)
    assert not overlaps, "; ".join(overlaps)
