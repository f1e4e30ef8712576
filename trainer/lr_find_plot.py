"""The range test's picture: smoothed loss against learning rate, lr on a log axis.

Drawn with Pillow (the product has no plotting library, and one picture does not warrant
one): the same image goes to `lr_find.png` and to TensorBoard's Images tab. It shows what a
person checks before trusting a suggestion: the raw losses faintly behind the smoothed curve,
each suggestion marked where it was read, the suggested lr as a dashed line, why the test
stopped.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

from common import lr_range

WIDTH, HEIGHT = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 58, 48
_TEXT, _MUTED, _GRID, _RAW, _CURVE = (20, 20, 20), (110, 110, 110), (228, 228, 228), \
    (200, 200, 200), (31, 91, 171)  # fmt: skip
COLOURS = {
    lr_range.VALLEY: (230, 120, 0),
    lr_range.STEEP: (30, 150, 60),
    lr_range.MINIMUM: (200, 30, 40),
}
# The y axis stops a little above `diverge` times the minimum: the last point of a diverged
# test may be far above it and would flatten the part of the curve worth reading.
Y_HEADROOM = 1.1


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw(record: lr_range.LrFind) -> Image.Image:
    """The picture of one test (any curve: one point, gaps where the loss was not a number)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    lrs = record.lrs
    smoothed = record.smoothed
    finite = [v for v in smoothed if v is not None]
    x_lo = math.floor(math.log10(min(lrs)))
    x_hi = max(math.ceil(math.log10(max(lrs))), x_lo + 1)
    y_lo, y_hi = _y_range(finite, record.settings.diverge)
    left, right, top, bottom = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM

    def x_of(lr: float) -> float:
        return left + (math.log10(lr) - x_lo) / (x_hi - x_lo) * (right - left)

    def y_of(loss: float) -> float:
        clipped = min(max(loss, y_lo), y_hi)
        return bottom - (clipped - y_lo) / (y_hi - y_lo) * (bottom - top)

    title = "lr-find: smoothed training loss (blue; grey: each step's own) against learning rate"
    pen.text((left, 8), title, fill=_TEXT, font=font)
    pen.text((left, 28), f"stopped: {record.stopped.why}", fill=_MUTED, font=small)
    for decade in range(x_lo, x_hi + 1):  # vertical grid, one line a decade
        x = x_of(10.0**decade)
        pen.line([(x, top), (x, bottom)], fill=_GRID)
        pen.text((x, bottom + 6), f"1e{decade:+03d}", fill=_MUTED, font=small, anchor="ma")
    for k in range(5):  # horizontal grid
        value = y_lo + (y_hi - y_lo) * k / 4
        y = y_of(value)
        pen.line([(left, y), (right, y)], fill=_GRID)
        pen.text((left - 6, y), f"{value:.3g}", fill=_MUTED, font=small, anchor="rm")
    pen.rectangle([left, top, right, bottom], outline=_MUTED)
    pen.text(((left + right) / 2, HEIGHT - 16), "learning rate (log scale)", fill=_MUTED,
             font=small, anchor="mm")  # fmt: skip

    raw = [(p.lr, p.loss) for p in record.curve]
    _polyline(pen, [(x_of(lr), y_of(v)) if v is not None else None for lr, v in raw], _RAW, 1)
    _polyline(pen, [(x_of(lr), y_of(v)) if v is not None else None
                    for lr, v in zip(lrs, smoothed, strict=True)], _CURVE, 2)  # fmt: skip

    legend = []
    for name, found in record.suggestions.items():
        colour = COLOURS[name]
        point = record.curve[found.index]
        if point.smoothed is not None:  # marked where it was read (minimum: at the minimum)
            cx, cy = x_of(point.lr), y_of(point.smoothed)
            pen.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour, outline="white")
        if name == lr_range.MINIMUM:
            label = f"minimum {point.lr:.3g} / 10 = {found.lr:.3g}"
        else:
            label = f"{lr_range.SUGGESTION_LABELS[name]} {found.lr:.3g}"
        if name == record.suggested:
            _dashed_vertical(pen, x_of(found.lr), top, bottom, colour)
            label += " (suggested, dashed)"
        legend.append((label, colour))
    if not legend:
        legend.append(("no suggestion: the curve is too short to read", _TEXT))
    width = max(pen.textlength(label, font=small) for label, _ in legend) + 36
    box = [right - width - 8, top + 6, right - 6, top + 12 + 18 * len(legend)]
    pen.rectangle(box, fill="white", outline=_GRID)  # over the curve: the legend stays legible
    y = top + 10
    for label, colour in legend:
        pen.ellipse([box[0] + 8, y + 2, box[0] + 18, y + 12], fill=colour)
        pen.text((box[0] + 26, y), label, fill=_TEXT, font=small)
        y += 18
    return image


def png(record: lr_range.LrFind) -> bytes:
    """draw() as PNG bytes, for lr_find.png."""
    out = io.BytesIO()
    draw(record).save(out, "PNG")
    return out.getvalue()


def _y_range(values: list[float], diverge: float) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if low > 0:
        high = min(high, low * diverge * Y_HEADROOM)
    if high - low < 1e-6 * max(1.0, abs(low)):  # a flat curve: still a readable axis
        high = low + max(1e-3, abs(low) * 0.1)
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _polyline(
    pen: ImageDraw.ImageDraw,
    points: list[tuple[float, float] | None],
    colour: tuple[int, int, int],
    width: int,
) -> None:
    """Connected runs of points; None (a loss that was not a number) leaves a gap."""
    run: list[tuple[float, float]] = []
    for point in [*points, None]:
        if point is not None:
            run.append(point)
            continue
        if len(run) > 1:
            pen.line(run, fill=colour, width=width, joint="curve")
        elif run:
            pen.point(run, fill=colour)
        run = []


def _dashed_vertical(
    pen: ImageDraw.ImageDraw, x: float, top: float, bottom: float, colour: tuple[int, int, int]
) -> None:
    y = top
    while y < bottom:
        pen.line([(x, y), (x, min(y + 6, bottom))], fill=colour, width=1)
        y += 10
