"""Draw the Orchard app icon with QPainter: a green apple with a leaf on a rounded tile.

Writes orchard-1024.png and orchard-512.png next to this file. macOS wants an .icns; build it
on a Mac with `iconutil` from these PNGs (packaging does that; it cannot be made on Linux here).

    QT_QPA_PLATFORM=offscreen python resources/icons/make_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QGuiApplication,
    QImage,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPen,
)

HERE = Path(__file__).resolve().parent
SIZES = (1024, 512)


def apple_path(s: float) -> QPainterPath:
    """Two overlapping lobes and a notch at the top: the classic apple outline."""
    path = QPainterPath()
    path.moveTo(0.50 * s, 0.34 * s)
    path.cubicTo(0.40 * s, 0.27 * s, 0.20 * s, 0.27 * s, 0.17 * s, 0.47 * s)
    path.cubicTo(0.14 * s, 0.66 * s, 0.28 * s, 0.86 * s, 0.40 * s, 0.86 * s)
    path.cubicTo(0.45 * s, 0.86 * s, 0.47 * s, 0.83 * s, 0.50 * s, 0.83 * s)
    path.cubicTo(0.53 * s, 0.83 * s, 0.55 * s, 0.86 * s, 0.60 * s, 0.86 * s)
    path.cubicTo(0.72 * s, 0.86 * s, 0.86 * s, 0.66 * s, 0.83 * s, 0.47 * s)
    path.cubicTo(0.80 * s, 0.27 * s, 0.60 * s, 0.27 * s, 0.50 * s, 0.34 * s)
    path.closeSubpath()
    return path


def leaf_path(s: float) -> QPainterPath:
    path = QPainterPath()
    path.moveTo(0.52 * s, 0.30 * s)
    path.cubicTo(0.56 * s, 0.16 * s, 0.70 * s, 0.12 * s, 0.76 * s, 0.13 * s)
    path.cubicTo(0.73 * s, 0.25 * s, 0.62 * s, 0.31 * s, 0.52 * s, 0.30 * s)
    path.closeSubpath()
    return path


def draw(size: int) -> QImage:
    s = float(size)
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    # Tile: macOS icon grid leaves ~10% margin around a rounded square.
    tile = QRectF(0.08 * s, 0.08 * s, 0.84 * s, 0.84 * s)
    bg = QLinearGradient(tile.topLeft(), tile.bottomLeft())
    bg.setColorAt(0, QColor("#fbfdf7"))
    bg.setColorAt(1, QColor("#dcedc8"))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(bg))
    p.drawRoundedRect(tile, 0.2 * s, 0.2 * s)
    p.translate(0.08 * s, 0.1 * s)
    p.scale(0.84, 0.84)
    # A soft shadow on the grass under the apple.
    p.setBrush(QColor(27, 94, 32, 50))
    p.drawEllipse(QPointF(0.5 * s, 0.88 * s), 0.3 * s, 0.035 * s)
    body = QLinearGradient(QPointF(0.2 * s, 0.3 * s), QPointF(0.8 * s, 0.9 * s))
    body.setColorAt(0, QColor("#66bb6a"))
    body.setColorAt(1, QColor("#1b5e20"))
    p.setBrush(QBrush(body))
    p.setPen(QPen(QColor("#1b5e20"), 0.012 * s))
    p.drawPath(apple_path(s))
    p.setPen(QPen(QColor("#5d4037"), 0.03 * s, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.drawLine(QPointF(0.5 * s, 0.34 * s), QPointF(0.47 * s, 0.2 * s))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#43a047"))
    p.drawPath(leaf_path(s))
    p.setBrush(QColor(255, 255, 255, 90))  # highlight
    p.drawEllipse(QPointF(0.32 * s, 0.5 * s), 0.05 * s, 0.1 * s)
    p.end()
    return image


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - needed for fonts/raster
    for size in SIZES:
        target = HERE / f"orchard-{size}.png"
        if not draw(size).save(str(target)):
            raise SystemExit(f"could not write {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
