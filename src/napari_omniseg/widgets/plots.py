"""Plots docked in napari: matplotlib figures on a Qt canvas, with axes, units and a legend.

One place draws every plot of the plugin (the Fine-tune widget's training curves, the Quantify
widget's bars and size histogram), in napari's dark colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BACKGROUND = "#262930"  # napari's dark theme
_FOREGROUND = "#d0d0d0"


class Plot:
    """One matplotlib figure on a Qt canvas (``native``) that can be redrawn any time."""

    def __init__(self, height_px: int = 180) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, height_px / 100), dpi=100, facecolor=_BACKGROUND,
                             layout="constrained")
        self.native = FigureCanvasQTAgg(self.figure)
        self.native.setMinimumHeight(height_px)
        self.axes = self.figure.add_subplot()

    def _style(self, ax) -> None:
        ax.set_facecolor(_BACKGROUND)
        ax.tick_params(colors=_FOREGROUND, labelsize=7)
        for side in ax.spines.values():
            side.set_color(_FOREGROUND)
        ax.xaxis.label.set_color(_FOREGROUND)
        ax.yaxis.label.set_color(_FOREGROUND)
        ax.title.set_color(_FOREGROUND)
        for item in (ax.xaxis.label, ax.yaxis.label, ax.title):
            item.set_fontsize(8)

    def _reset(self):
        self.figure.clear()
        self.axes = self.figure.add_subplot()
        self._style(self.axes)
        return self.axes

    def draw(self) -> None:
        """Redraw the canvas when Qt is next idle."""
        self.native.draw_idle()

    def bars(self, names: Sequence[str], values: Sequence[float], colours: Sequence, ylabel: str,
             title: str = "") -> None:
        """Bars, one per name, in the given colours."""
        ax = self._reset()
        ax.bar(list(names), list(values), color=list(colours))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        self.draw()

    def histogram(self, values: np.ndarray, xlabel: str, colour, title: str = "") -> None:
        """A histogram of object sizes on a logarithmic size axis."""
        ax = self._reset()
        values = np.asarray(values, float)
        values = values[values > 0]
        if len(values):
            lo, hi = values.min(), values.max()
            bins = np.geomspace(lo, hi * 1.0001, 25) if hi > lo else 10
            ax.hist(values, bins=bins, color=colour)
            if hi > lo:
                ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("objects")
        ax.set_title(title)
        self.draw()


class LossPlot(Plot):
    """Training loss and validation Dice against time, updated as training reports; for
    adaptation also the discriminators' mean loss (entries with ``d_*`` losses)."""

    def __init__(self) -> None:
        super().__init__(height_px=170)
        self.history: list[dict] = []
        self._redraw()

    def add(self, entry: dict) -> None:
        """Add one validation entry and redraw."""
        self.history.append(entry)
        self._redraw()

    def clear(self) -> None:
        """Forget the history and redraw."""
        self.history = []
        self._redraw()

    def _redraw(self) -> None:
        ax = self._reset()
        dice_ax = ax.twinx()
        self._style(dice_ax)
        for axis, key, colour, label in ((ax, "loss", "#ff963c", "training loss"),
                                         (ax, "discriminators", "#b07cff", None),
                                         (dice_ax, "val_dice", "#3cc8dc", "validation Dice")):
            pts = [(e["seconds"], _value(e, key)) for e in self.history
                   if _value(e, key) is not None]
            if pts:
                x, y = zip(*pts)
                axis.plot(x, y, "o-", color=colour, markersize=3, label=key)
            if label is not None:
                axis.set_ylabel(label, color=colour)
        if any(_value(e, "discriminators") is not None for e in self.history):
            ax.legend(["training loss", "discriminators"], fontsize=6, labelcolor=_FOREGROUND,
                      facecolor=_BACKGROUND, edgecolor=_FOREGROUND)
        dice_ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        self.draw()


def _value(entry: dict, key: str) -> float | None:
    """An entry's value of ``key``; "discriminators" is the mean of its ``d_*`` losses."""
    if key != "discriminators":
        return entry.get(key)
    values = [v for k, v in entry.items() if k.startswith("d_") and v is not None]
    return float(np.mean(values)) if values else None
