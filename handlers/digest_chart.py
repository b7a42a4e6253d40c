"""The small chart attached to a manager's digest: the open pipeline by stage, now vs. last digest.

Rendered offline to PNG bytes with matplotlib's object API and the Agg canvas, never pyplot:
pyplot keeps global figure state (a leak and a race in a server rendering digests on several
threads) and may try to pick a GUI backend. matplotlib is imported on the first chart, not with
this module, because the dispatcher imports ``handlers`` at start-up and matplotlib costs a few
hundred milliseconds to import.

The image is 640×320 px and kept well under 25 KB (Teams inlines it in a card with a ~28 KB
message limit): fixed margins instead of a layout engine (which would draw twice), then the
frame reduced to a small adaptive palette and written as a PNG without metadata. A chart takes
some 20-40 ms, nearly all of it matplotlib laying out and drawing text.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from handlers.format import clip

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH_IN, HEIGHT_IN, DPI = 6.4, 3.2, 100  # 640×320 px
STAGE_CHARS = 20  # longer stage names are shortened with "…"
TITLE_CHARS, TITLE_CHARS_BESIDE_LEGEND = 80, 52
MIN_SLOTS = 4
PALETTE_COLOURS = 64
NOW_COLOUR, BEFORE_COLOUR = "#1d5fbf", "#b9c3cf"
INK, MUTED_INK, GRID = "#24292f", "#57606a", "#e3e7eb"
UNITS = ((1e3, "k"), (1e6, "M"), (1e9, "B"))


@dataclass(frozen=True, slots=True)
class StageBar:
    stage: str
    now: Decimal  # open amount in this stage now
    before: Decimal | None  # at the previous digest (None: no earlier digest)


def compact(value: float) -> str:
    """A short amount for an axis or a bar: 350000 -> "350k", 1234567 -> "1.2M", 999960 -> "1M"."""
    number, suffix = f"{value:.0f}", ""
    for size, unit in UNITS:
        if abs(float(number)) < 1000:
            break
        number, suffix = f"{value / size:.1f}".rstrip("0").rstrip("."), unit
    return number + suffix


def pipeline_chart(bars: Sequence[StageBar], *, currency: str, title: str) -> bytes:
    """A PNG of the open amount per stage (in pipeline order, top to bottom), with the amount at
    the previous digest beside it when any stage has one; a stage without one gets no bar there."""
    Figure = _matplotlib()
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor="white")
    has_before = any(bar.before is not None for bar in bars)
    figure.suptitle(clip(title, TITLE_CHARS_BESIDE_LEGEND if has_before else TITLE_CHARS), x=0.02, y=0.97,
                    ha="left", fontsize=10, fontweight="bold", color=INK, parse_math=False)
    if bars:
        _draw_bars(figure, bars, currency, has_before)
    else:
        figure.text(0.5, 0.47, "No open deals", ha="center", va="center", fontsize=12, color=MUTED_INK)
    return _png(figure)


@functools.cache
def _matplotlib() -> type[Figure]:
    """Import matplotlib on the first chart and set the one process-wide option this module needs:
    unhinted glyphs, which look the same at these sizes and make text (most of the drawing time)
    about 40 % faster. Nothing else in Dealbot uses matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["text.hinting"] = "no_hinting"
    return Figure


def _draw_bars(figure: Figure, bars: Sequence[StageBar], currency: str, has_before: bool) -> None:
    """Bars as two polygon collections and stage names as plain texts rather than `barh` and
    y ticks: one artist per series instead of one per bar, and no tick machinery per stage."""
    from matplotlib.collections import PolyCollection
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    count = len(bars)
    figure.subplots_adjust(left=0.26, right=0.94, top=0.86, bottom=0.15)
    axes = figure.add_subplot()
    now = [float(bar.now) for bar in bars]
    before = [float(bar.before) for bar in bars if bar.before is not None]
    size = 7 if count > 8 else 8
    height = 0.38 if has_before else 0.6
    now_centres = [slot - height / 2 if has_before else float(slot) for slot in range(count)]
    series = [PolyCollection(_rectangles(zip(now_centres, now), height), facecolors=NOW_COLOUR,
                             edgecolors="none", label="now")]
    if has_before:
        series.append(PolyCollection(
            _rectangles(((slot + height / 2, float(bar.before)) for slot, bar in enumerate(bars)
                         if bar.before is not None), height),
            facecolors=BEFORE_COLOUR, edgecolors="none", label="last digest"))
    for collection in series:
        axes.add_collection(collection, autolim=False)
    for centre, value in zip(now_centres, now):
        label, align = (f" {compact(value)}", "left") if value >= 0 else (f"{compact(value)} ", "right")
        axes.text(value, centre, label, ha=align, va="center", fontsize=size - 1, color=INK, parse_math=False)

    names = axes.get_yaxis_transform()  # x in axes fractions, y in stage slots
    for slot, bar in enumerate(bars):
        axes.text(-0.015, slot, clip(bar.stage, STAGE_CHARS), transform=names, ha="right", va="center",
                  fontsize=size, color=INK, parse_math=False)
    axes.yaxis.set_visible(False)
    spare = max(0, MIN_SLOTS - count) / 2  # a stage or two: centred bars of a normal thickness
    axes.set_ylim(count - 0.5 + spare, -0.5 - spare)  # first stage on top
    low, high = min(0.0, *now, *before), max(0.0, *now, *before)
    room = 0.12 * max(high - low, 1.0)  # for the amounts at the bar ends
    axes.set_xlim(low - room if low < 0 else 0.0, max(high + room, 1.0))
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: compact(value)))
    axes.tick_params(axis="x", labelsize=7, colors=MUTED_INK, length=0)
    axes.set_xlabel(f"Open amount ({currency.upper()})", fontsize=8, color=MUTED_INK, parse_math=False)
    axes.grid(axis="x", color=GRID, linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right", "bottom"):
        axes.spines[side].set_visible(False)
    axes.spines["left"].set_color(MUTED_INK)
    if has_before:
        figure.legend(handles=series, loc="upper right", bbox_to_anchor=(0.985, 0.995), ncols=2, fontsize=8,
                      frameon=False, handlelength=1.2, columnspacing=1.2, labelcolor=INK)


def _rectangles(bars: Iterable[tuple[float, float]], height: float) -> list[list[tuple[float, float]]]:
    """Corner lists of horizontal bars from (centre slot, amount) pairs, for a `PolyCollection`."""
    return [[(0.0, centre - height / 2), (value, centre - height / 2), (value, centre + height / 2),
             (0.0, centre + height / 2)] for centre, value in bars]


def _png(figure: Figure) -> bytes:
    """Render, reduce to an adaptive palette (anti-aliased text needs a few dozen shades) and write
    the PNG without metadata. Pillow comes with matplotlib. `optimize=True` would take about 4 ms
    more for a file some 15 % smaller, which is already a fifth of the limit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    frame = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    frame.convert("RGB").quantize(PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE).save(out, format="PNG")
    return out.getvalue()
