"""Captions built from attributes with a small template language, combined with the raw caption.

Template fields are `{key}` or `{key:filter}` with filters `lower`, `title`, `possessive`
("Men" -> "Men's"), chained with `+` (`{gender:title+possessive}`: "MEN" -> "Men's"). Missing, empty or 'NA' values vanish together with the separators they
leave dangling, so one template serves records with different attribute sets.
"""

from __future__ import annotations

import re
import string
from typing import Mapping

from .records import AttributeValue

CAPTION_MODES = ("raw", "attributes", "both")
MISSING_VALUES = {"", "na", "n/a", "none", "nan", "null", "unknown"}
_FORMATTER = string.Formatter()


def _possessive(word: str) -> str:
    if word.lower() in {"unisex"}:
        return word
    return word + ("'" if word.endswith("s") else "'s")


_FILTERS = {
    "": lambda value: value,
    "lower": str.lower,
    "title": str.title,
    "possessive": _possessive,
}


def render_template(template: str, attributes: Mapping[str, AttributeValue]) -> str:
    """Fill `template` from `attributes`, dropping missing fields and tidying punctuation."""
    pieces: list[str] = []
    for literal, key, spec, _ in _FORMATTER.parse(template):
        pieces.append(literal)
        if key is None:
            continue
        filters = spec.split("+")
        for name in filters:
            if name not in _FILTERS:
                raise ValueError(f"caption template field '{{{key}:{spec}}}': unknown filter '{name}' "
                                 f"(valid: {', '.join(f for f in _FILTERS if f)})")
        value = attributes.get(key)
        text = "" if value is None else str(value).strip()
        if text.lower() in MISSING_VALUES:
            text = ""
        for name in filters if text else ():
            text = _FILTERS[name](text)
        pieces.append(text)
    return _tidy("".join(pieces))


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)         # "shirt ," -> "shirt,"
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," -> ","
    text = text.strip(" ,;:")
    return text[:1].upper() + text[1:]


def build_caption(raw: str, attributes: Mapping[str, AttributeValue], mode: str, template: str) -> str:
    """The caption a model sees: the raw caption, the attribute caption, or both joined."""
    if mode not in CAPTION_MODES:
        raise ValueError(f"caption mode '{mode}' is not one of {', '.join(CAPTION_MODES)}")
    if mode == "raw" or not template:
        return raw
    from_attributes = render_template(template, attributes)
    if mode == "attributes":
        return from_attributes or raw
    if not from_attributes or from_attributes.lower() == raw.lower():
        return raw
    return f"{raw.rstrip('. ')}. {from_attributes}"
