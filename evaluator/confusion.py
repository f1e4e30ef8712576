"""The confusion matrix as a picture a person can read in TensorBoard's Images tab.

Up to GRID_MAX classes: a grid whose rows (true class) and columns (predicted class) are named,
each cell shaded by its share of the row and labelled with its count. With more classes a grid
is unreadable at any size, so the picture lists the most-confused pairs instead ("true ->
predicted: count, share of the true class"), which is what one looks for in the grid anyway.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_MAX = 20
PAIRS_SHOWN = 15
_WHITE, _BLUE = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
_TEXT, _MUTED = (20, 20, 20), (110, 110, 110)


def row_shares(confusion: np.ndarray) -> np.ndarray:
    """Each count as a share of its row (its true class); rows with no examples stay 0."""
    rows = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)


def most_confused(
    confusion: np.ndarray, labels: list[str], k: int = PAIRS_SHOWN
) -> list[tuple[str, str, int, float]]:
    """The k largest off-diagonal cells: (true, predicted, count, share of the true class).

    Ordered by count, then share, then names, so equal cells always list the same way.
    """
    shares = row_shares(confusion)
    pairs = [
        (labels[i], labels[j], int(confusion[i, j]), float(shares[i, j]))
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and confusion[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p[2], -p[3], p[0], p[1]))
    return pairs[:k]


def confusion_image(confusion: np.ndarray, labels: list[str]) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a named grid for few classes, the most-confused pairs for many."""
    confusion = np.asarray(confusion)
    if len(labels) <= GRID_MAX:
        return np.asarray(_grid(confusion, labels))
    return np.asarray(_pairs(confusion, labels))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _grid(confusion: np.ndarray, labels: list[str]) -> Image.Image:
    n = len(labels)
    cell = int(np.clip(480 // max(1, n), 24, 64))
    font = _font(max(10, min(16, cell // 2)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = max(int(measure.textlength(label, font=font)) for label in labels) + 12
    head = 22  # one line of caption
    image = Image.new("RGB", (name_w + n * cell + 10, head + name_w + n * cell + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), "rows: true class   columns: predicted class", fill=_MUTED, font=font)
    top = head + name_w
    for j, label in enumerate(labels):  # column names, written upwards
        text = Image.new("RGB", (name_w, cell), "white")
        ImageDraw.Draw(text).text((4, cell // 2), label, fill=_TEXT, font=font, anchor="lm")
        image.paste(text.rotate(90, expand=True), (name_w + j * cell, head))
    shares = row_shares(confusion)
    for i, label in enumerate(labels):
        y = top + i * cell
        draw.text((name_w - 6, y + cell // 2), label, fill=_TEXT, font=font, anchor="rm")
        for j in range(n):
            x = name_w + j * cell
            colour = tuple(int(c) for c in (_WHITE + shares[i, j] * (_BLUE - _WHITE)).round())
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(220, 220, 220))
            if confusion[i, j]:
                ink = "white" if shares[i, j] > 0.5 else _TEXT
                draw.text((x + cell // 2, y + cell // 2), str(int(confusion[i, j])), fill=ink,
                          font=font, anchor="mm")  # fmt: skip
    return image


def _pairs(confusion: np.ndarray, labels: list[str]) -> Image.Image:
    font = _font(16)
    pairs = most_confused(confusion, labels)
    total = int(confusion.sum())
    right = int(np.trace(confusion))
    lines = [
        f"{len(labels)} classes: too many for a grid. Most-confused pairs "
        f"({total - right} of {total} examples are wrong):",
        "",
    ]
    lines += [f"{t}  ->  {p}:  {c}  ({s:.0%} of {t})" for t, p, c, s in pairs] or ["none"]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(int(measure.textlength(line, font=font)) for line in lines) + 24
    image = Image.new("RGB", (max(width, 320), 16 + 22 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(lines):
        draw.text((12, 8 + 22 * k), line, fill=_MUTED if k == 0 else _TEXT, font=font)
    return image
