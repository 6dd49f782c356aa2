"""The training curves of a run as a PNG for its model card, drawn with Pillow (gradio's own dependency):
plotly would need kaleido, a browser-sized package, to write an image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

# (title, train metric, eval metric): one panel each, training line blue, held-out points orange.
PANELS = (
    ("loss", "loss", "eval_loss"),
    ("reward margin", "rewards/margins", "eval_rewards/margins"),
    ("reward accuracy", "rewards/accuracies", "eval_rewards/accuracies"),
    ("learning rate", "learning_rate", None),
)
PANEL_W, PANEL_H, PAD = 420, 260, 42
TRAIN_COLOUR, EVAL_COLOUR, AXIS_COLOUR = (31, 119, 180), (255, 127, 14), (90, 90, 90)


def series(metrics: Sequence[dict[str, Any]], key: str | None) -> list[tuple[float, float]]:
    """(step, value) of every record that holds a finite number under ``key``."""
    if key is None:
        return []
    points = []
    for record in metrics:
        value, step = record.get(key), record.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)) and math.isfinite(value):
            points.append((float(step), float(value)))
    return points


def _scale(lo: float, hi: float) -> tuple[float, float]:
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else (lo, hi)


def _draw_panel(draw: ImageDraw.ImageDraw, left: int, top: int, title: str,
                lines: list[tuple[list[tuple[float, float]], tuple[int, int, int]]]) -> None:
    x0, y0, x1, y1 = left + PAD, top + 24, left + PANEL_W - 12, top + PANEL_H - 28
    draw.rectangle((x0, y0, x1, y1), outline=AXIS_COLOUR)
    draw.text((x0, top + 6), title, fill=(0, 0, 0))
    points = [p for line, _ in lines for p in line]
    if not points:
        draw.text((x0 + 10, y0 + 10), "not recorded", fill=AXIS_COLOUR)
        return
    sx = _scale(min(p[0] for p in points), max(p[0] for p in points))
    sy = _scale(min(p[1] for p in points), max(p[1] for p in points))

    def at(step: float, value: float) -> tuple[float, float]:
        return (x0 + (step - sx[0]) / (sx[1] - sx[0]) * (x1 - x0), y1 - (value - sy[0]) / (sy[1] - sy[0]) * (y1 - y0))

    draw.text((left + 2, y0 - 4), f"{sy[1]:.4g}", fill=AXIS_COLOUR)
    draw.text((left + 2, y1 - 8), f"{sy[0]:.4g}", fill=AXIS_COLOUR)
    draw.text((x0, y1 + 6), f"step {sx[0]:.0f}", fill=AXIS_COLOUR)
    draw.text((x1 - 60, y1 + 6), f"step {sx[1]:.0f}", fill=AXIS_COLOUR)
    for line, colour in lines:
        xy = [at(*p) for p in line]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)


def write_curves_png(metrics: Sequence[dict[str, Any]], path: Path) -> Path:
    """A 2 x 2 grid of the run's curves (blue: training, orange: held-out pairs) written to ``path``."""
    image = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((PAD, 6), "training (blue) and held-out pairs (orange), by optimizer step", fill=(0, 0, 0))
    for index, (title, train_key, eval_key) in enumerate(PANELS):
        left, top = (index % 2) * PANEL_W, 24 + (index // 2) * PANEL_H
        lines = [(series(metrics, train_key), TRAIN_COLOUR), (series(metrics, eval_key), EVAL_COLOUR)]
        _draw_panel(draw, left, top, title, lines)
    path = Path(path)
    image.save(path, format="PNG")
    return path
