"""Training captions: the many ways a person names a micro-world scene, and the words they may add.

A scene's canonical caption ("a small red triangle at the top left on a blue background",
`Scene.caption`) is one of many. `training_caption` draws the canonical form about half the time and
otherwise a varied one: synonyms ("big", "middle", "upper left", "disc", "box"), other word orders
("a triangle in red", "top left: ..."), other background phrases ("against blue", "with a blue
background"), a leading phrase ("an image of", "draw"), commas and stops, dropped articles, and
meaningless words (`JUNK_WORDS`, random letter strings) at random places, so that a word the model
never saw reads as noise instead of derailing the text encoder.

Every word a training caption can hold is in `training_words()` or `JUNK_WORDS`. The evaluation's
paraphrased prompts (`models/micro-sd/eval_paraphrases.jsonl`) were written before training and each
holds a word outside both, so no training caption equals one of them (tests/lab/micro/test_captions.py).
"""

from __future__ import annotations

import re

import numpy as np

from lab.micro.world import ATTRIBUTES, POSITIONS, Scene, vocabulary

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in ATTRIBUTES["color"]} | {"purple": ("purple", "violet")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {b: COLOR_WORDS.get(b, (b,)) for b in ATTRIBUTES["background"]} | {
    "gray": ("gray", "grey")
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}


def _position_words() -> dict[str, tuple[str, ...]]:
    rows = {"top": ("top", "upper"), "": ("middle", "center"), "bottom": ("bottom", "lower")}
    words: dict[str, tuple[str, ...]] = {}
    for name in POSITIONS:
        parts = name.split()
        if name == "center":
            words[name] = ("center", "centre", "middle")
        elif len(parts) == 2:  # a corner
            row, col = parts
            words[name] = tuple(f"{r} {col}" for r in rows[row]) + (f"{row} {col} corner", f"{row}-{col}")
        elif name in ("top", "bottom"):
            words[name] = (name, f"{name} center", f"{name} middle", f"{rows[name][1]} middle")
        else:  # left, right
            words[name] = (name, f"{name} side", f"middle {name}", f"center {name}")
    return words


POSITION_WORDS = _position_words()
POSITION_PREPOSITIONS = ("at the", "in the", "on the")
LEADS = ("an image of", "a drawing of", "an illustration of", "draw", "show", "render", "generate", "there is",
         "a scene with", "a view of", "an image with")  # fmt: skip
ARTICLES = ("a", "a", "a", "one", "the", "")


def _junk_words(n: int = 4096, seed: int = 0x1A2B) -> tuple[str, ...]:
    """`n` random lowercase strings of 5-9 letters: words no caption and, by their length and
    randomness, no English prompt uses (the test checks them against the paraphrase set)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return tuple("".join(rng.choice(letters, size=int(rng.integers(5, 10)))) for _ in range(n))


JUNK_WORDS = _junk_words()


def _article(rng: np.random.Generator, next_word: str) -> str:
    article = str(rng.choice(ARTICLES))
    if article == "a" and next_word[:1] in "aeiou":
        return "an"
    return article


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _object_phrase(scene: Scene, rng: np.random.Generator, size: bool) -> str:
    shape = _pick(rng, SHAPE_WORDS[scene.shape])
    color = _pick(rng, COLOR_WORDS[scene.color])
    size_word = _pick(rng, SIZE_WORDS[scene.size]) if size else ""
    form = int(rng.integers(6))
    if form <= 2:  # the usual order
        words = [size_word, color, shape]
    elif form == 3:
        words = [size_word, shape, "in", color]
    elif form == 4:
        words = [size_word, color, "colored", shape]
    else:
        words = [size_word, shape, "that is", color]
    words = [w for w in words if w]
    return " ".join(filter(None, [_article(rng, words[0]), *words]))


_BOUND = "\u00a0"  # joins a place's words ("top left") while junk words are inserted, so none lands inside


def _position_phrase(scene: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """(the phrase, whether it may lead the caption as "top left: ...")."""
    place = _pick(rng, POSITION_WORDS[scene.position]).replace(" ", _BOUND)
    if rng.random() < 0.15:
        return place, True
    return f"{_pick(rng, POSITION_PREPOSITIONS)} {place}", False


def _background_phrase(scene: Scene, rng: np.random.Generator) -> str:
    color = _pick(rng, BACKGROUND_WORDS[scene.background])
    article = "an" if color[0] in "aeiou" else "a"
    forms = (f"on {article} {color} background", f"with {article} {color} background",
             f"against {article} {color} background", f"on {color}", f"against {color}",
             f"{color} background", f"over {article} {color} background")  # fmt: skip
    return _pick(rng, forms)


OPTIONAL = ("size", "position", "background")


def _named(rng: np.random.Generator, keep: float, always: tuple[str, ...]) -> list[bool]:
    draws = rng.random(3) < keep
    return [bool(d) or name in always for d, name in zip(draws, OPTIONAL)]


def varied_caption(scene: Scene, rng: np.random.Generator, keep: float, always: tuple[str, ...] = ()) -> str:
    """One of the many captions of `scene`; each of size, position and background is named with
    probability `keep`, or always when in `always`."""
    named = _named(rng, keep, always)
    obj = _object_phrase(scene, rng, size=bool(named[0]))
    parts = [obj]
    if named[1]:
        phrase, bare = _position_phrase(scene, rng)
        if bare:
            parts = [phrase + ":"] + parts if rng.random() < 0.5 else parts + ["," + phrase]
        elif rng.random() < 0.25:
            parts = [phrase + ","] + parts
        else:
            parts.append(phrase)
    if named[2]:
        phrase = _background_phrase(scene, rng)
        parts = [phrase + ","] + parts if rng.random() < 0.2 else parts + [("," if rng.random() < 0.3 else "") + phrase]
    if rng.random() < 0.3:
        parts.insert(0, _pick(rng, LEADS))
    text = " ".join(parts).replace(" ,", ",")
    words = text.split(" ")
    if rng.random() < 0.3:  # words no caption means anything by (between words, never inside a place)
        for _ in range(int(rng.integers(1, 4))):
            words.insert(int(rng.integers(len(words) + 1)), _pick(rng, JUNK_WORDS))
    if rng.random() < 0.2:
        words[-1] += _pick(rng, (".", "!", "?"))
    return " ".join(words).replace(_BOUND, " ")


def training_caption(scene: Scene, rng: np.random.Generator, keep: float, varied: float = 0.5,
                     always: tuple[str, ...] = ()) -> str:  # fmt: skip
    """The canonical caption (size, position and background each named with probability `keep`, or
    always when in `always`) or, with probability `varied`, a varied one."""
    if rng.random() < varied:
        return varied_caption(scene, rng, keep, always)
    size, position, background = _named(rng, keep, always)
    return scene.caption(size=size, position=position, background=background)


def training_words() -> set[str]:
    """Every word (letter run, lowercased) a training caption can hold, besides `JUNK_WORDS`."""
    text = " ".join(
        [*LEADS, *ARTICLES, "an", "in", "colored", "that is", "at the", "on a", "background", *POSITION_PREPOSITIONS,
         "against", "with", "over", "on", *(w for table in (SHAPE_WORDS, COLOR_WORDS, BACKGROUND_WORDS, SIZE_WORDS,
                                                          POSITION_WORDS) for ws in table.values() for w in ws)]
    )  # fmt: skip
    return set(words_of(text)) | set(vocabulary())


def words_of(text: str) -> list[str]:
    """The words of `text` as the tokenizer sees them: lowercase letter runs and single digits."""
    return re.findall(r"[a-z]+|[0-9]", text.lower())
