"""The four apparatus, drawn differently so the event is visible in every frame.

Geometry is given in the facing frame (metres, x toward the athlete's take-off facing, y up, the
landing surface at y = 0); the renderer mirrors x with the clip's facing. Each apparatus is a list of
primitives — axis-aligned boxes and thick segments — plus the support heights the choreography
stands on (floor, beam top, springboard, table) or hangs from (bars).
"""

from __future__ import annotations

from dataclasses import dataclass

# Heights and positions (metres) used by the choreography as well as by the drawing.
BEAM_TOP = 1.25
BEAM_HALF = 2.5
BOARD_X = -1.5  # springboard centre
BOARD_TOP = 0.2
TABLE_TOP = 1.25
TABLE_HALF = 0.5
HIGH_BAR = (0.0, 2.5)
LOW_BAR = (-1.45, 1.75)
BAR_R = 0.045

# Base colours (RGB); the clip's nuisance tints them slightly.
MAT_BLUE = (40.0, 95.0, 185.0)
MAT_GREY = (120.0, 130.0, 150.0)
MAT_TEAL = (40.0, 150.0, 140.0)
BEAM_TAN = (205.0, 170.0, 110.0)
RUNWAY_RED = (170.0, 60.0, 50.0)
TABLE_BLUE = (30.0, 50.0, 110.0)
BOARD_WHITE = (235.0, 235.0, 225.0)
BAR_WHITE = (240.0, 240.0, 240.0)
POST_GREY = (95.0, 95.0, 110.0)


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Segment:
    x0: float
    y0: float
    x1: float
    y1: float
    r: float
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Apparatus:
    event: str
    boxes: tuple[Box, ...]
    segments: tuple[Segment, ...]
    main_colour: tuple[float, float, float]  # the colour a test looks for in every frame
    anchor_x: float  # the camera's resting point (apparatus centre)
    y_range: tuple[float, float]  # vertical extent the camera tries to keep in view


def apparatus_for(event: str) -> Apparatus:
    """Primitives of the event's apparatus. Boxes are drawn before segments, both before the athlete."""
    if event == "FX":
        return Apparatus(
            event,
            boxes=(Box(-40, -0.45, 40, 0.0, MAT_BLUE), Box(-40, -0.03, 40, 0.0, (235.0, 235.0, 235.0))),
            segments=(),
            main_colour=MAT_BLUE,
            anchor_x=0.0,
            y_range=(-0.55, 2.0),
        )
    if event == "BB":
        legs = tuple(
            Segment(sx * 1.7 + dx, BEAM_TOP - 0.15, sx * 1.7 + 2.2 * dx, 0.0, 0.04, POST_GREY)
            for sx in (-1, 1)
            for dx in (-0.18, 0.18)
        )
        return Apparatus(
            event,
            boxes=(
                Box(-40, -0.3, 40, 0.0, MAT_GREY),
                Box(-BEAM_HALF, BEAM_TOP - 0.2, BEAM_HALF, BEAM_TOP, BEAM_TAN),
            ),
            segments=legs,
            main_colour=BEAM_TAN,
            anchor_x=0.0,
            y_range=(-0.4, BEAM_TOP + 1.0),
        )
    if event == "VT":
        return Apparatus(
            event,
            boxes=(
                Box(-40, -0.3, -0.9, 0.0, RUNWAY_RED),
                Box(0.7, -0.35, 40, 0.0, RUNWAY_RED),
                Box(-TABLE_HALF, TABLE_TOP - 0.12, TABLE_HALF, TABLE_TOP, TABLE_BLUE),
                Box(-0.45, 0.0, 0.45, 0.15, TABLE_BLUE),
            ),
            segments=(
                Segment(0.0, TABLE_TOP - 0.12, 0.0, 0.12, 0.09, TABLE_BLUE),
                Segment(BOARD_X - 0.35, 0.05, BOARD_X + 0.3, BOARD_TOP - 0.03, 0.05, BOARD_WHITE),
            ),
            main_colour=RUNWAY_RED,
            anchor_x=-0.5,
            y_range=(-0.45, TABLE_TOP + 0.3),
        )
    if event == "UB":
        hx, hy = HIGH_BAR
        lx, ly = LOW_BAR
        segs = (
            Segment(hx, hy, hx, 0.0, 0.045, POST_GREY),
            Segment(lx, ly, lx, 0.0, 0.045, POST_GREY),
            Segment(hx, hy, hx + 2.2, 0.0, 0.012, POST_GREY),
            Segment(lx, ly, lx - 1.9, 0.0, 0.012, POST_GREY),
            Segment(hx - 0.6, 0.02, lx + 0.6, 0.02, 0.04, POST_GREY),
            Segment(hx, hy, hx, hy, BAR_R * 1.6, BAR_WHITE),
            Segment(lx, ly, lx, ly, BAR_R * 1.6, BAR_WHITE),
        )
        return Apparatus(
            event,
            boxes=(Box(-40, -0.35, 40, 0.0, MAT_TEAL),),
            segments=segs,
            main_colour=MAT_TEAL,
            anchor_x=-0.5,
            y_range=(-0.45, hy + 0.2),
        )
    raise ValueError(f"unknown event {event!r} (expected VT, FX, BB or UB)")
