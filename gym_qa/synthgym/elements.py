"""The SynthGym element catalogue: events → sets → elements, in FineGym's vocabulary.

Every element is a row of numeric attributes (direction, body shape, saltos, twists, turns, entry) from
which both its choreography (:mod:`gym_qa.synthgym.pose_tracks`) and its Qtree-style yes/no
questions are derived, so names, motion and attribute answers cannot drift apart.

Set ids follow FineGym's ``set_categories.txt``: the first digit is the event (1 VT, 2 FX, 3 BB, 4 UB).
``glabel`` is the element's global id inside SynthGym (stable across presets, like FineGym's Glabel);
a preset picks a subset and numbers it with class labels ``0..C-1`` (FineGym's Clabel).

Conventions used by the attributes:
- ``direction``: +1 forward (the body rotates toward the side the athlete faces at take-off),
  -1 backward, 0 no salto rotation.
- ``twists``: turns about the body's long axis during flight (FineGym says "twist" on FX/BB and "turn"
  on VT/UB dismounts). ``turns``: turns about the long axis while supported (on one leg, or in
  handstand on the bar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

EVENTS: dict[str, str] = {"VT": "vault", "FX": "floor exercise", "BB": "balance beam", "UB": "uneven bars"}
EVENT_DIGIT: dict[str, int] = {"VT": 1, "FX": 2, "BB": 3, "UB": 4}

# FineGym's set names (gym_qa/data/finegym/set_categories.txt), restricted to the sets SynthGym draws.
SETS: dict[int, str] = {
    1: "vault",
    21: "FX_leap_jump_hop",
    22: "FX_turns",
    24: "FX_front_salto",
    25: "FX_back_salto",
    31: "BB_leap_jump_hop",
    32: "BB_turns",
    33: "BB_flight_salto",
    34: "BB_flight_handspring",
    35: "BB_dismounts",
    41: "UB_circles",
    43: "UB_transition_flight",
    44: "UB_dismounts",
}


@dataclass(frozen=True)
class ElementSpec:
    """How SynthGym renders one element class: ``kind`` selects the choreography, the other fields
    parametrise it. (A task's view of a class — label, set, event, name — is
    :class:`gym_qa.hierarchy_files.Element`.)"""

    glabel: int
    set_id: int
    name: str
    kind: str  # salto | jump | turn | handspring | dismount | vault | circle | transition | bar_dismount
    direction: int = 0  # +1 forward, -1 backward, 0 none
    shape: str = "none"  # tucked/piked/stretched (saltos), split/straddle/stag/wolf/tuck (jumps), ...
    saltos: int = 0
    twists: float = 0.0  # long-axis turns in flight
    turns: float = 0.0  # long-axis turns while supported (one leg, handstand)
    entry: str = ""  # vault entry: handspring | roundoff | roundoff_half

    @property
    def event(self) -> str:
        return {1: "VT", 2: "FX", 3: "BB", 4: "UB"}[self.set_id // 10 if self.set_id >= 10 else self.set_id]

    def attributes(self) -> dict:
        """Numeric and categorical attributes, as written to ``meta.json``."""
        d = asdict(self)
        d["event"] = self.event
        d["direction_name"] = {1: "forward", -1: "backward", 0: "none"}[self.direction]
        return d


def _catalogue() -> list[ElementSpec]:
    rows: list[tuple] = [
        # (set, name, kind, direction, shape, saltos, twists, turns, entry)
        (1, "round-off, flic-flac on, tucked salto backward off", "vault", -1, "tucked", 1, 0, 0, "roundoff"),
        (1, "round-off, flic-flac on, piked salto backward off", "vault", -1, "piked", 1, 0, 0, "roundoff"),
        (
            1,
            "round-off, flic-flac on, stretched salto backward off",
            "vault",
            -1,
            "stretched",
            1,
            0,
            0,
            "roundoff",
        ),
        (
            1,
            "round-off, flic-flac on, stretched salto backward with 1 turn off",
            "vault",
            -1,
            "stretched",
            1,
            1,
            0,
            "roundoff",
        ),
        (
            1,
            "round-off, flic-flac on, stretched salto backward with 2 turn off",
            "vault",
            -1,
            "stretched",
            1,
            2,
            0,
            "roundoff",
        ),
        (
            1,
            "round-off, flic-flac with 0.5 turn on, stretched salto forward off",
            "vault",
            1,
            "stretched",
            1,
            0,
            0,
            "roundoff_half",
        ),
        (
            1,
            "round-off, flic-flac with 0.5 turn on, stretched salto forward with 0.5 turn off",
            "vault",
            1,
            "stretched",
            1,
            0.5,
            0,
            "roundoff_half",
        ),
        (1, "handspring forward on, salto forward tucked off", "vault", 1, "tucked", 1, 0, 0, "handspring"),
        (1, "handspring forward on, salto forward piked off", "vault", 1, "piked", 1, 0, 0, "handspring"),
        (
            1,
            "handspring forward on, salto forward stretched off",
            "vault",
            1,
            "stretched",
            1,
            0,
            0,
            "handspring",
        ),
        (
            1,
            "handspring forward on, salto forward stretched with 1 turn off",
            "vault",
            1,
            "stretched",
            1,
            1,
            0,
            "handspring",
        ),
        (21, "split jump (leg separation 180 degree parallel to the floor)", "jump", 0, "split", 0, 0, 0, ""),
        (21, "split jump with 1 turn", "jump", 0, "split", 0, 1, 0, ""),
        (21, "straddle pike or side split jump", "jump", 0, "straddle", 0, 0, 0, ""),
        (21, "straddle pike or side split jump with 1 turn", "jump", 0, "straddle", 0, 1, 0, ""),
        (21, "stag jump", "jump", 0, "stag", 0, 0, 0, ""),
        (21, "tuck jump", "jump", 0, "tuck", 0, 0, 0, ""),
        (21, "tuck jump with 1 turn", "jump", 0, "tuck", 0, 1, 0, ""),
        (22, "1 turn on one leg, free leg optional below horizontal", "turn", 0, "passe", 0, 0, 1, ""),
        (22, "2 turn on one leg, free leg optional below horizontal", "turn", 0, "passe", 0, 0, 2, ""),
        (
            22,
            "1 turn with heel of free leg forward at horizontal throughout turn",
            "turn",
            0,
            "horizontal",
            0,
            0,
            1,
            "",
        ),
        (
            22,
            "2 turn with heel of free leg forward at horizontal throughout turn",
            "turn",
            0,
            "horizontal",
            0,
            0,
            2,
            "",
        ),
        (
            22,
            "2 turn with free leg held upward in 180 split position throughout turn",
            "turn",
            0,
            "split",
            0,
            0,
            2,
            "",
        ),
        (24, "salto forward tucked", "salto", 1, "tucked", 1, 0, 0, ""),
        (24, "salto forward piked", "salto", 1, "piked", 1, 0, 0, ""),
        (24, "salto forward stretched, feet land together", "salto", 1, "stretched", 1, 0, 0, ""),
        (24, "salto forward stretched with 1 twist", "salto", 1, "stretched", 1, 1, 0, ""),
        (24, "salto forward stretched with 2 twist", "salto", 1, "stretched", 1, 2, 0, ""),
        (24, "double salto forward tucked", "salto", 1, "tucked", 2, 0, 0, ""),
        (25, "salto backward tucked", "salto", -1, "tucked", 1, 0, 0, ""),
        (25, "salto backward piked", "salto", -1, "piked", 1, 0, 0, ""),
        (25, "salto backward stretched", "salto", -1, "stretched", 1, 0, 0, ""),
        (25, "salto backward stretched with 1 twist", "salto", -1, "stretched", 1, 1, 0, ""),
        (25, "salto backward stretched with 2 twist", "salto", -1, "stretched", 1, 2, 0, ""),
        (25, "salto backward stretched with 1.5 twist", "salto", -1, "stretched", 1, 1.5, 0, ""),
        (25, "double salto backward tucked", "salto", -1, "tucked", 2, 0, 0, ""),
        (25, "double salto backward tucked with 1 twist", "salto", -1, "tucked", 2, 1, 0, ""),
        (31, "split jump", "jump", 0, "split", 0, 0, 0, ""),
        (31, "split jump with 0.5 turn", "jump", 0, "split", 0, 0.5, 0, ""),
        (31, "straddle pike jump or side split jump", "jump", 0, "straddle", 0, 0, 0, ""),
        (31, "wolf hop or jump (hip angle at 45, knees together)", "jump", 0, "wolf", 0, 0, 0, ""),
        (32, "1 turn on one leg, free leg optional below horizontal", "turn", 0, "passe", 0, 0, 1, ""),
        (32, "2 turn on one leg, free leg optional below horizontal", "turn", 0, "passe", 0, 0, 2, ""),
        (32, "2 turn in tuck stand on one leg, free leg optional", "turn", 0, "tuck_stand", 0, 0, 2, ""),
        (33, "salto backward tucked", "salto", -1, "tucked", 1, 0, 0, ""),
        (33, "salto forward tucked", "salto", 1, "tucked", 1, 0, 0, ""),
        (33, "salto backward stretched with legs together", "salto", -1, "stretched", 1, 0, 0, ""),
        (33, "salto backward tucked with 1 twist", "salto", -1, "tucked", 1, 1, 0, ""),
        (34, "flic-flac to land on both feet", "handspring", -1, "stretched", 0, 0, 0, ""),
        (34, "handspring forward to land on both feet", "handspring", 1, "stretched", 0, 0, 0, ""),
        (35, "salto backward tucked dismount", "dismount", -1, "tucked", 1, 0, 0, ""),
        (35, "salto backward stretched with 1 twist dismount", "dismount", -1, "stretched", 1, 1, 0, ""),
        (35, "salto backward stretched with 2 twist dismount", "dismount", -1, "stretched", 1, 2, 0, ""),
        (35, "double salto backward tucked dismount", "dismount", -1, "tucked", 2, 0, 0, ""),
        (41, "giant circle backward", "circle", -1, "giant", 0, 0, 0, ""),
        (41, "giant circle forward", "circle", 1, "giant", 0, 0, 0, ""),
        (41, "giant circle backward with 0.5 turn to handstand", "circle", -1, "giant", 0, 0, 0.5, ""),
        (41, "giant circle forward with 0.5 turn to handstand", "circle", 1, "giant", 0, 0, 0.5, ""),
        (41, "giant circle backward with 1 turn to handstand", "circle", -1, "giant", 0, 0, 1, ""),
        (41, "clear hip circle backward to handstand", "circle", -1, "clear_hip", 0, 0, 0, ""),
        (41, "pike sole circle backward to handstand", "circle", -1, "sole", 0, 0, 0, ""),
        (43, "transition flight from high bar to low bar", "transition", 1, "stretched", 0, 0, 0, ""),
        (44, "(swing forward) salto backward tucked dismount", "bar_dismount", -1, "tucked", 1, 0, 0, ""),
        (
            44,
            "(swing forward) salto backward stretched dismount",
            "bar_dismount",
            -1,
            "stretched",
            1,
            0,
            0,
            "",
        ),
        (
            44,
            "(swing forward) double salto backward tucked dismount",
            "bar_dismount",
            -1,
            "tucked",
            2,
            0,
            0,
            "",
        ),
        (
            44,
            "(swing forward) double salto backward tucked with 1 turn dismount",
            "bar_dismount",
            -1,
            "tucked",
            2,
            1,
            0,
            "",
        ),
        (
            44,
            "(swing forward) double salto backward stretched dismount",
            "bar_dismount",
            -1,
            "stretched",
            2,
            0,
            0,
            "",
        ),
    ]
    return [
        ElementSpec(
            glabel=i,
            set_id=s,
            name=n,
            kind=k,
            direction=d,
            shape=sh,
            saltos=sa,
            twists=float(tw),
            turns=float(tu),
            entry=en,
        )
        for i, (s, n, k, d, sh, sa, tw, tu, en) in enumerate(rows)
    ]


CATALOGUE: list[ElementSpec] = _catalogue()
BY_GLABEL: dict[int, ElementSpec] = {e.glabel: e for e in CATALOGUE}


def element_by_name(event: str, name: str) -> ElementSpec:
    """Look an element up by event code and exact name (names repeat across events, as in FineGym)."""
    for e in CATALOGUE:
        if e.event == event and e.name == name:
            return e
    raise KeyError(f"no SynthGym element ({event}) {name!r}")


# ---------------------------------------------------------------------------------------------------
# Pairs: elements that differ in one attribute only, so that a single frame cannot tell them apart.
# ---------------------------------------------------------------------------------------------------


def _same_except(a: ElementSpec, b: ElementSpec, fields: tuple[str, ...]) -> bool:
    da, db = asdict(a), asdict(b)
    ignore = {"glabel", "name", "set_id", *fields}
    return a.event == b.event and a.kind == b.kind and all(da[k] == db[k] for k in da if k not in ignore)


def direction_pairs(elements: list[ElementSpec]) -> list[tuple[int, int]]:
    """(forward, backward) glabel pairs identical except the rotation sense.

    Only elements whose rotation window is time-symmetric qualify: vertical saltos (FX/BB) and giant
    circles. For them the forward clip's poses in the window are the backward clip's poses reversed.
    """
    eligible = {"salto", "circle"}
    out = []
    for a in elements:
        for b in elements:
            if (
                a.kind in eligible
                and a.direction == 1
                and b.direction == -1
                and a.shape != "clear_hip"
                and _same_except(a, b, ("direction",))
                and a.twists == int(a.twists)
            ):
                out.append((a.glabel, b.glabel))
    return out


def twist_pairs(elements: list[ElementSpec]) -> list[tuple[int, int]]:
    """(fewer, more) glabel pairs differing only by a whole number of twists or turns.

    Whole numbers only: then take-off and landing (and facing after the element) are identical, so the
    clips differ only inside the element window.
    """
    out = []
    for a in elements:
        for b in elements:
            for f in ("twists", "turns"):
                va, vb = getattr(a, f), getattr(b, f)
                # Keep only adjacent whole counts (0-1, 1-2), the hardest to tell apart.
                between = any(
                    va < getattr(c, f) < vb and float(getattr(c, f)).is_integer() and _same_except(a, c, (f,))
                    for c in elements
                )
                if (
                    va < vb
                    and float(vb - va).is_integer()
                    and va == int(va)
                    and not between
                    and _same_except(a, b, (f,))
                ):
                    out.append((a.glabel, b.glabel))
    return out


def short_window_pairs(elements: list[ElementSpec]) -> list[tuple[int, int]]:
    """(without, with) glabel pairs differing by a half turn/twist: identical up to a short window, after
    which the athlete faces the other way."""
    out = []
    for a in elements:
        for b in elements:
            for f in ("twists", "turns"):
                va, vb = getattr(a, f), getattr(b, f)
                if va == 0 and vb == 0.5 and _same_except(a, b, (f,)):
                    out.append((a.glabel, b.glabel))
    return out


# ---------------------------------------------------------------------------------------------------
# Qtree-style questions (finegym_glabel_to_Qtree.json): per set family a fixed list of yes/no questions.
# ---------------------------------------------------------------------------------------------------

Question = tuple[str, Callable[[ElementSpec], bool]]

_SALTO_QUESTIONS: list[Question] = [
    ("Salto forward?", lambda e: e.direction == 1),
    ("Body tucked during salto?", lambda e: e.shape == "tucked"),
    ("Body piked during salto?", lambda e: e.shape == "piked"),
    ("Body keep stretched during salto (stretched salto)?", lambda e: e.shape == "stretched"),
    ("Double salto?", lambda e: e.saltos == 2),
    ("Salto with twist?", lambda e: e.twists > 0),
    ("Salto with 1 twist?", lambda e: e.twists == 1),
    ("Salto with 2 twist?", lambda e: e.twists == 2),
]
_VAULT_QUESTIONS: list[Question] = [
    ("round-off onto the springboard?", lambda e: e.entry.startswith("roundoff")),
    ("turning entry after round-off (turning in first flight phase)?", lambda e: e.entry == "roundoff_half"),
    ("Salto forward in second flight phase?", lambda e: e.direction == 1),
    ("Body tucked during salto?", lambda e: e.shape == "tucked"),
    ("Body piked during salto?", lambda e: e.shape == "piked"),
    ("Body keep stretched during salto (stretched salto)?", lambda e: e.shape == "stretched"),
    ("Salto with turn?", lambda e: e.twists > 0),
    ("Salto with 1 turn?", lambda e: e.twists == 1),
    ("Facing vault table after landing?", lambda e: (e.entry == "roundoff") != (int(2 * e.twists) % 2 == 1)),
]
_JUMP_QUESTIONS: list[Question] = [
    ("180 degree separation of thighs (split)?", lambda e: e.shape in ("split", "straddle")),
    ("Cross split (one leg forward, one leg backward)?", lambda e: e.shape == "split"),
    ("Straddle pike or side split?", lambda e: e.shape == "straddle"),
    ("Knees bent in flight?", lambda e: e.shape in ("stag", "tuck", "wolf")),
    ("With turn?", lambda e: e.twists > 0),
    ("1 turn?", lambda e: e.twists == 1),
    ("0.5 turn (facing different directions when take off and after landing)?", lambda e: e.twists == 0.5),
]
_TURN_QUESTIONS: list[Question] = [
    ("Free leg at horizontal or above?", lambda e: e.shape in ("horizontal", "split")),
    ("Free leg held upward in 180 split position?", lambda e: e.shape == "split"),
    ("Tuck stand on support leg?", lambda e: e.shape == "tuck_stand"),
    ("2 turn or more?", lambda e: e.turns >= 2),
]
_HANDSPRING_QUESTIONS: list[Question] = [
    ("Handspring forward?", lambda e: e.direction == 1),
    ("Flic-flac (handspring backward)?", lambda e: e.direction == -1),
    ("Land on both feet?", lambda e: True),
]
_CIRCLE_QUESTIONS: list[Question] = [
    ("Toes touch the bar during circle (sole circle)?", lambda e: e.shape == "sole"),
    ("giant circle?", lambda e: e.shape == "giant"),
    ("circle backward?", lambda e: e.direction == -1),
    ("Hips close to the bar (clear hip circle)?", lambda e: e.shape == "clear_hip"),
    ("With turn before handstand phase?", lambda e: e.turns > 0),
    ("1 turn?", lambda e: e.turns == 1),
]
_TRANSITION_QUESTIONS: list[Question] = [
    ("From high bar to low bar?", lambda e: True),
    ("With salto?", lambda e: e.saltos > 0),
]

_QUESTIONS_BY_KIND: dict[str, list[Question]] = {
    "salto": _SALTO_QUESTIONS,
    "dismount": _SALTO_QUESTIONS,
    "bar_dismount": _SALTO_QUESTIONS,
    "vault": _VAULT_QUESTIONS,
    "jump": _JUMP_QUESTIONS,
    "turn": _TURN_QUESTIONS,
    "handspring": _HANDSPRING_QUESTIONS,
    "circle": _CIRCLE_QUESTIONS,
    "transition": _TRANSITION_QUESTIONS,
}


def element_code(e: ElementSpec) -> str:
    """A FineGym-like element code ``"<event digit>.<set digit><index in set, 2 digits>"``."""
    index = [x.glabel for x in CATALOGUE if x.set_id == e.set_id].index(e.glabel)
    return f"{EVENT_DIGIT[e.event]}.{e.set_id % 10}{index:02d}"


def qtree_entry(e: ElementSpec) -> dict:
    """The element's Qtree record: ``{"BTcode": "0101..", "questions": [...], "code": "..."}``."""
    questions = _QUESTIONS_BY_KIND[e.kind]
    bits = "".join("1" if pred(e) else "0" for _, pred in questions)
    return {"BTcode": bits, "questions": [q for q, _ in questions], "code": element_code(e)}
