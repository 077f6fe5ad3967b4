"""The pretraining stream of the embedded CLIP: random scenes with **captions** from many templates that mention a
random subset of the attributes ("a sketch of a small striped star", "blue heart on the left", ...), so a text
encoder trained on them has to read every word, including the style words.

The committed checkpoint was trained on exactly this stream: ``tests/test_embedded_checkpoint.py`` checks its digest,
so any change here (a word, a weight, the order of random draws) must come with a new checkpoint.
"""

from __future__ import annotations

import numpy as np

from dpclab.data.scenes import Scene, _pick, random_scene, render

_PATTERN_WORDS = {
    "plain": ["plain", "solid"],
    "striped": ["striped", "stripy"],
    "dotted": ["dotted", "polka dot", "spotted"],
    "checkered": ["checkered", "checked"],
    "grid": ["grid", "gridded"],
    "speckled": ["speckled", "noisy"],
}
_PATTERN_NOUNS = {
    "plain": "no pattern", "striped": "stripes", "dotted": "dots", "checkered": "checks",
    "grid": "a grid pattern", "speckled": "speckles",
}
_POSITION_WORDS = {
    "center": ["in the center", "in the middle"], "left": ["on the left"], "right": ["on the right"],
    "top": ["at the top"], "bottom": ["at the bottom"],
}
_STYLE_PREFIX = {
    "photo": ["a photo of", "an image of", "a picture of", "a rendering of", "", "this is", "there is",
              "a good photo of", "a photo showing"],
    "outline": ["a sketch of", "an outline drawing of", "a line drawing of", "an outline of", "a drawing of"],
    "tinted": ["a tinted photo of", "a tinted image of", "a colour tinted picture of"],
    "blurry": ["a blurry photo of", "a blurred image of", "a blurry picture of"],
}


def _article(words: str) -> str:
    return "an" if words[:1] in "aeiou" else "a"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One of many possible captions of a scene; attributes are mentioned at random (caption dropout)."""
    colour_words = scene.colour if scene.shade == "plain" else f"{scene.shade} {scene.colour}"
    if scene.style == "texture":
        pat = _pick(rng, _PATTERN_WORDS[scene.pattern])
        form = int(rng.integers(5))
        if form == 0:
            return f"{_article(colour_words)} {colour_words} {pat} texture."
        if form == 1:
            return f"{pat} texture in {colour_words}."
        if form == 2:
            return f"{_article(pat)} {pat} pattern."
        if form == 3:
            return f"a close-up of {_article(colour_words)} {colour_words} {pat} texture."
        return f"{colour_words} {_PATTERN_NOUNS[scene.pattern]} texture."

    show_colour = rng.random() < 0.8
    show_pattern = scene.pattern != "plain" and scene.style != "outline" and rng.random() < 0.6
    show_size = rng.random() < 0.35
    show_pos = rng.random() < 0.3
    show_bg = rng.random() < 0.25
    noun = scene.shape if rng.random() < 0.9 else _pick(rng, ["shape", "object"])
    adjs = []
    if show_size and scene.size != "medium":
        adjs.append(scene.size)
    if show_colour:
        adjs.append(colour_words)
    pattern_after = show_pattern and rng.random() < 0.3
    if show_pattern and not pattern_after:
        adjs.append(_pick(rng, _PATTERN_WORDS[scene.pattern]))
    phrase = " ".join(adjs + [noun])
    phrase = f"{_article(phrase)} {phrase}"
    if pattern_after:
        phrase += f" with {_PATTERN_NOUNS[scene.pattern]}"
    tail = []
    if show_pos:
        tail.append(_pick(rng, _POSITION_WORDS[scene.position]))
    if show_bg:
        tail.append(f"on {_article(scene.background)} {scene.background} background")
    prefix = _pick(rng, _STYLE_PREFIX[scene.style])
    if scene.style == "photo" and rng.random() < 0.3:
        prefix = ""
    body = " ".join([prefix, phrase] + tail).strip()
    if rng.random() < 0.15 and show_colour:  # reordered form: "star, red, striped"
        parts = [noun, colour_words] + ([_pick(rng, _PATTERN_WORDS[scene.pattern])] if show_pattern else [])
        body = " ".join(filter(None, [prefix, ", ".join(parts)]))
    return body + "."


def sample_pretrain_batch(seed: int, step: int, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """The pretraining stream: batch ``step`` of a seeded, endless sequence of (image, caption) pairs.

    Returns uint8 images of shape (B, IMAGE_SIZE, IMAGE_SIZE, 3) and B captions.
    """
    rng = np.random.default_rng([seed, step, 0x5EED])
    images, captions = [], []
    for _ in range(batch_size):
        scene = random_scene(rng)
        images.append(render(scene, rng))
        captions.append(caption(scene, rng))
    return np.stack(images), captions
