"""The scenes of the embedded image world: a vocabulary, one coloured, patterned shape drawn in a style, and random
scenes (used by the pretraining stream, :mod:`dpclab.data.captions`, and the downstream datasets,
:mod:`dpclab.data.downstream`). :mod:`dpclab.data.world` is the package's one entry point to all three.

A **scene** is one coloured, patterned shape of some size and position on a background, drawn in a **style** (plain
photo, outline drawing, tinted photo, blurry photo, or a texture-only swatch). Everything is a pure function of a
random generator: the same seed gives the same images, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
_SS = 4  # supersampling factor for anti-aliased shape masks

# ----------------------------------------------------------------------------------------------------
# Vocabulary of the world
# ----------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "heart", "diamond", "hexagon",
    "ring", "crescent", "arrow", "pentagon", "semicircle", "frame", "bowtie", "trapezoid",
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 190),
    "pink": (250, 120, 190),
    "brown": (130, 80, 30),
    "cyan": (30, 200, 210),
    "gray": (128, 128, 128),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235),
    "black": (20, 20, 20),
    "gray": (110, 110, 110),
    **{k: COLOURS[k] for k in ("red", "green", "blue", "yellow", "purple", "orange")},
}

SHADES: tuple[str, ...] = ("light", "plain", "dark")
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "grid", "speckled")
SIZES: tuple[str, ...] = ("small", "medium", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
STYLES: tuple[str, ...] = ("photo", "outline", "tinted", "blurry", "texture")

# Objects fill much of the 32 px frame and most are plain and centred: at 4x4 patches of 8 px the tiny
# ViT otherwise learns colours and textures but hardly shapes (measured: a 16-shot linear probe on its
# features separated 16 shapes at 16-20% with radii 6-14 px, and most of the gain came from larger objects).
_SIZE_RADIUS = {"small": (8.0, 9.5), "medium": (10.5, 12.0), "large": (13.0, 14.5)}
#: how often the pretraining stream draws each style / pattern / position (in the order of the tuples above)
STYLE_WEIGHTS = (0.5, 0.13, 0.13, 0.09, 0.15)
PATTERN_WEIGHTS = (0.6, 0.08, 0.08, 0.08, 0.08, 0.08)
POSITION_WEIGHTS = (0.6, 0.1, 0.1, 0.1, 0.1)
_POS_DIR = {"center": (0, 0), "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw one image (and to describe it in words)."""

    shape: str = "circle"
    colour: str = "red"
    shade: str = "plain"
    pattern: str = "plain"
    size: str = "medium"
    position: str = "center"
    background: str = "white"
    style: str = "photo"
    rotation: float = 0.0  # degrees
    radius: float = 9.0  # pixels
    jitter: tuple[float, float] = (0.0, 0.0)  # pixels
    phase: float = 0.0  # pattern phase / orientation seed in [0, 1)
    tint: tuple[int, int, int] = (200, 150, 90)
    tint_strength: float = 0.0
    second_colour: tuple[int, int, int] | None = None  # texture swatches: the colour between pattern marks
    extra: dict = field(default_factory=dict, compare=False)


def shade_rgb(colour: str, shade: str) -> np.ndarray:
    """RGB in [0, 1] of ``colour`` in a shade: light mixes with white, dark scales towards black."""
    rgb = np.asarray(COLOURS[colour], dtype=np.float32) / 255.0
    if shade == "light":
        return rgb * 0.6 + 0.4
    if shade == "dark":
        return rgb * 0.6
    return rgb


# ----------------------------------------------------------------------------------------------------
# Shape masks
# ----------------------------------------------------------------------------------------------------


def _regular(n: int, r: float = 1.0, start: float = -90.0) -> list[tuple[float, float]]:
    return [
        (r * math.cos(math.radians(start + 360.0 * k / n)), r * math.sin(math.radians(start + 360.0 * k / n)))
        for k in range(n)
    ]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    outer = _regular(points)
    inn = _regular(points, inner, start=-90.0 + 180.0 / points)
    return [p for pair in zip(outer, inn) for p in pair]


def _heart(n: int = 40) -> list[tuple[float, float]]:
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 + 0.1))
    return pts


def _shift(poly: list[tuple[float, float]], dx: float, dy: float, s: float = 1.0) -> list[tuple[float, float]]:
    return [(x * s + dx, y * s + dy) for x, y in poly]


@lru_cache(maxsize=None)
def shape_ops(shape: str) -> tuple[tuple[tuple[tuple[float, float], ...], int], ...]:
    """A shape as a sequence of (polygon in unit coordinates, fill 255 or 0) drawing operations.

    Holes (ring, crescent, frame) are drawn as a filled polygon followed by an erasing one.
    """
    circle = _regular(48)
    sq = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    ops: dict[str, list[tuple[list[tuple[float, float]], int]]] = {
        "circle": [(circle, 255)],
        "square": [(sq, 255)],
        "triangle": [(_shift(_regular(3), 0, 0.2), 255)],
        "star": [(_star(), 255)],
        "cross": [([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                    (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], 255)],
        "heart": [(_heart(), 255)],
        "diamond": [([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], 255)],
        "hexagon": [(_regular(6, start=0.0), 255)],
        "ring": [(circle, 255), (_shift(circle, 0, 0, 0.55), 0)],
        "crescent": [(circle, 255), (_shift(circle, 0.45, -0.2, 0.85), 0)],
        "arrow": [([(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)], 255)],
        "pentagon": [(_regular(5), 255)],
        "semicircle": [([(math.cos(math.pi * k / 24), -math.sin(math.pi * k / 24) + 0.4) for k in range(25)], 255)],
        "frame": [(sq, 255), (_shift(sq, 0, 0, 0.55), 0)],
        "bowtie": [([(-1, -0.7), (0, 0), (-1, 0.7)], 255), ([(1, -0.7), (0, 0), (1, 0.7)], 255)],
        "trapezoid": [([(-0.45, -0.6), (0.45, -0.6), (1, 0.6), (-1, 0.6)], 255)],
    }
    return tuple((tuple(p), fill) for p, fill in ops[shape])


def shape_mask(shape: str, cx: float, cy: float, radius: float, rotation: float) -> np.ndarray:
    """Anti-aliased coverage mask (float32 in [0, 1], IMAGE_SIZE²) of a shape centred at (cx, cy)."""
    big = IMAGE_SIZE * _SS
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    for poly, fill in shape_ops(shape):
        pts = [((cx + radius * (x * c - y * s)) * _SS, (cy + radius * (x * s + y * c)) * _SS) for x, y in poly]
        draw.polygon(pts, fill=fill)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------------------------
# Patterns and styles
# ----------------------------------------------------------------------------------------------------


def pattern_field(pattern: str, phase: float, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Where a pattern's marks are (1) and are not (0), as an IMAGE_SIZE² float32 array."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    off = phase * 8.0
    if pattern == "plain":
        return np.ones_like(xx)
    if pattern == "striped":
        angle = (0.0, 90.0, 45.0, 135.0)[int(phase * 4) % 4]
        u = xx * math.cos(math.radians(angle)) + yy * math.sin(math.radians(angle))
        return (((u + off) / (3.0 * scale)) % 2.0 < 1.0).astype(np.float32)
    if pattern == "dotted":
        p = 6.0 * scale
        dx, dy = (xx + off) % p - p / 2, (yy + off) % p - p / 2
        return ((dx * dx + dy * dy) <= (1.6 * scale) ** 2).astype(np.float32)
    if pattern == "checkered":
        k = 4.0 * scale
        return ((np.floor((xx + off) / k) + np.floor((yy + off) / k)) % 2 == 0).astype(np.float32)
    if pattern == "grid":
        p = 6.0 * scale
        return ((((xx + off) % p) < 1.5) | (((yy + off) % p) < 1.5)).astype(np.float32)
    if pattern == "speckled":
        return (rng.random(xx.shape) < 0.35).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}")


def _box_blur(img: np.ndarray) -> np.ndarray:
    """3x3 box blur of an HxWxC image with edge padding."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _erode(mask: np.ndarray) -> np.ndarray:
    """3x3 minimum filter (morphological erosion) of a 2-D mask."""
    p = np.pad(mask, 1, mode="constant")
    h, w = mask.shape
    return np.min(np.stack([p[i:i + h, j:j + w] for i in range(3) for j in range(3)]), axis=0)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene as an IMAGE_SIZE x IMAGE_SIZE x 3 uint8 array."""
    fg = shade_rgb(scene.colour, scene.shade)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32) / 255.0
    noise = rng.normal(0.0, 0.03, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    if scene.style == "texture":
        second = bg if scene.second_colour is None else np.asarray(scene.second_colour, np.float32) / 255.0
        marks = pattern_field(scene.pattern, scene.phase, rng, scene.extra.get("pattern_scale", 1.0))[..., None]
        img = marks * fg + (1.0 - marks) * second
    else:
        dx, dy = _POS_DIR[scene.position]
        offset = min(6.0, 15.0 - scene.radius)
        cx = IMAGE_SIZE / 2 + dx * offset + scene.jitter[0]
        cy = IMAGE_SIZE / 2 + dy * offset + scene.jitter[1]
        alpha = shape_mask(scene.shape, cx, cy, scene.radius, scene.rotation)
        if scene.style == "outline":
            alpha = np.clip(alpha - _erode(alpha), 0.0, 1.0)
            if scene.extra.get("thick_outline"):
                alpha = np.clip(alpha + np.clip(alpha - _erode(alpha), 0, 1), 0, 1)
            obj = np.broadcast_to(fg, (IMAGE_SIZE, IMAGE_SIZE, 3))
        else:
            marks = pattern_field(scene.pattern, scene.phase, rng)[..., None]
            obj = marks * fg + (1.0 - marks) * (fg * 0.35 + 0.65 * np.float32(0.95))
        img = alpha[..., None] * obj + (1.0 - alpha[..., None]) * bg
    img = img + noise
    if scene.style == "tinted":
        tint = np.asarray(scene.tint, dtype=np.float32) / 255.0
        img = (1.0 - scene.tint_strength) * img + scene.tint_strength * tint
    if "lighting" in scene.extra:  # a global exposure change (domain shift of the fine-grained dataset)
        img = img * np.float32(scene.extra["lighting"])
    if "cast" in scene.extra:  # a coloured light: per-channel gains
        img = img * np.asarray(scene.extra["cast"], dtype=np.float32)
    if scene.style == "blurry" or scene.extra.get("blur"):
        img = _box_blur(img)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Random scenes and captions (the pretraining stream)
# ----------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: Sequence, p: Sequence[float] | None = None):
    return items[int(rng.choice(len(items), p=p))]


def random_scene(rng: np.random.Generator, **fixed) -> Scene:
    """A random scene; keyword arguments pin attributes (e.g. ``shape="star"``, ``style="outline"``)."""
    a: dict = {}
    a["style"] = fixed.get("style") or _pick(rng, STYLES, STYLE_WEIGHTS)
    a["shape"] = fixed.get("shape") or _pick(rng, SHAPES)
    a["colour"] = fixed.get("colour") or _pick(rng, tuple(COLOURS))
    a["shade"] = fixed.get("shade") or _pick(rng, SHADES, [0.25, 0.5, 0.25])
    a["pattern"] = fixed.get("pattern") or _pick(rng, PATTERNS, PATTERN_WEIGHTS)
    if a["style"] == "texture" and a["pattern"] == "plain" and "pattern" not in fixed:
        a["pattern"] = _pick(rng, PATTERNS[1:])
    a["size"] = fixed.get("size") or _pick(rng, SIZES)
    a["position"] = fixed.get("position") or _pick(rng, POSITIONS, POSITION_WEIGHTS)
    if "background" in fixed:
        a["background"] = fixed["background"]
    else:
        choices = [b for b in BACKGROUNDS if b != a["colour"]]
        a["background"] = _pick(rng, choices)
    lo, hi = _SIZE_RADIUS[a["size"]]
    a["radius"] = float(rng.uniform(lo, hi))
    a["rotation"] = float(rng.uniform(-15.0, 15.0))
    a["jitter"] = (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)))
    a["phase"] = float(rng.random())
    a["tint"] = tuple(int(v) for v in rng.integers(60, 256, 3))
    a["tint_strength"] = float(rng.uniform(0.25, 0.5)) if a["style"] == "tinted" else 0.0
    for key in ("rotation", "radius", "tint", "tint_strength", "second_colour", "extra"):
        if key in fixed:
            a[key] = fixed[key]
    return Scene(**a)
