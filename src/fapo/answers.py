"""Answer text without sympy: the final answer's source in a response, the gold's answer, a normalisation that
cannot change meaning, and the fast path that decides identical answers and plain numbers.

Used by `fapo.verify` before any math-verify work, and by evaluation (`normalize_answer` for maj@k). Pure
functions on strings; knows nothing about processes, rewards or models.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from fapo.boxed import count_boxed, last_boxed

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_DELIMITER_SIZE = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[,;: ]|\\displaystyle|\\textstyle|~")
_SPACE_FREE = frozenset("{}()[]+-=^_/|<>")  # whitespace next to these never changes a formula's meaning
_WHITESPACE = re.compile(r"\s+")
_MINERVA = re.compile(r"final answer is", re.IGNORECASE)
_GLUE_AFTER_BRACE = re.compile(  # what may separate the boxes of one listed answer
    r"\}(?:\s|[$,;&]|\\[,;:! \\()\[\]]|\\q?quad|\\text\{\s*(?:and|or|,)?\s*\}|and|or"
    r"|[a-zA-Z]{1,3}(?:_\{?\w{1,3}\}?)?\s*=)*\Z"  # labels: `x = \boxed{1}, y = \boxed{2}`
)
_NUMBER = re.compile(
    r"(?P<sign>[+-]?)(?:"
    r"(?P<int>\d{1,100}|[1-9]\d{0,2}(?:(?:,|\{,\})\d{3}){1,30})"  # 12, 3,250, 10{,}000
    r"|(?P<dec>\d{0,100}\.\d{1,100})"  # 0.75, .5
    r"|\\frac\{(?P<num>\d{1,100})\}\{(?P<den>\d{1,100})\}"  # \frac{3}{8}
    r"|(?P<slash_num>\d{1,100})/(?P<slash_den>\d{1,100})"  # 3/8
    r")"
)


def gold_answer(gold: str) -> str:
    """The gold's final answer as text: its last box, else the gold without one `$...$`-like wrapper."""
    boxed = last_boxed(gold)
    if boxed is not None:
        return boxed.strip()
    text = gold.strip()
    for left, right in _WRAPPERS:
        inner = text[len(left) : -len(right)] if len(text) >= len(left) + len(right) else ""
        if text.startswith(left) and text.endswith(right) and "$" not in inner:
            return inner.strip()
    return text


def answer_source(response: str) -> tuple[Literal["boxed", "text"], str]:
    """Where `response`'s final answer is: ("boxed", content of its last box) or ("text", response).

    "text" hands the whole response to math-verify's own extraction: when there is no (well-formed)
    last box, when the last box ends a list of boxes (`\\boxed{1}, \\boxed{2}`, which math-verify
    reads as one answer {1, 2}), or when the response states "The final answer is X. I hope it is
    correct." (the Minerva format, which math-verify ranks above boxes).
    """
    if "I hope" in response and _MINERVA.search(response):
        return "text", response
    content = last_boxed(response)
    if content is None:
        return "text", response
    if count_boxed(response) > 1 and _ends_a_box_list(response):
        return "text", response
    return "boxed", content


def _ends_a_box_list(response: str) -> bool:
    """Whether the last box follows another box with only list glue (`,`, `and`, `\\quad`, `$`) between."""
    prefix = response[: max(response.rfind("\\boxed"), response.rfind("\\fbox"))]
    tail = prefix[-200:]  # bounded: glue longer than this is not a list
    match = _GLUE_AFTER_BRACE.search(tail)
    if match is None:
        return False
    head = prefix[: len(prefix) - len(tail) + match.start() + 1]
    previous = last_boxed(head)
    return previous is not None and head.endswith("{" + previous + "}")


def normalize_answer(text: str) -> str:
    """Rewrite `text` only in ways that cannot change its mathematical meaning.

    Drops `\\left`/`\\right`, `\\!`, and maps `\\dfrac`/`\\tfrac` to `\\frac`. Other spacing
    macros become spaces; whitespace is dropped next to a bracket or operator (`x + 1`) and before a
    backslash (it never ends a control word there), and elsewhere collapses to one space:
    `2 3` may mean 2*3, `\\pi r` is not `\\pir`, `32, 349` is a pair.
    """
    text = _DELIMITER_SIZE.sub("", text).replace("\\!", "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _SPACING.sub(" ", text)
    parts = _WHITESPACE.split(text.strip())
    out = parts[0]
    for part in parts[1:]:
        if out and part and out[-1] not in _SPACE_FREE and part[0] not in _SPACE_FREE and part[0] != "\\":
            out += " "
        out += part
    return out


def _number(text: str) -> tuple[Fraction, bool] | None:
    """(value, is_integer_form) of a plain number: `-12`, `3,250`, `10{,}000`, `0.75`, `\\frac{3}{8}`."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    sign = -1 if match["sign"] == "-" else 1
    if match["num"] is not None or match["slash_num"] is not None:
        num, den = int(match["num"] or match["slash_num"]), int(match["den"] or match["slash_den"])
        return (sign * Fraction(num, den), False) if den else None
    if match["dec"] is not None:
        return sign * Fraction(Decimal(match["dec"])), False
    return sign * int(match["int"].replace("{,}", "").replace(",", "")), True


def fast_verdict(pred: str, gold: str) -> bool | None:
    """True/False when the answer is decided without math-verify, None when math-verify must decide.

    Accepts identical normalised non-empty strings, and integers of equal value (`3,250` = `3250`).
    Rejects two plain numbers (integers, decimals, integer fractions) more than 1e-5 apart: math-verify
    compares numbers exactly or rounded to 6 decimals, so those are never equal there. Anything
    else (`1/2` vs `0.5`, `x+1` vs `1+x`, closer numbers) goes to math-verify.
    """
    return fast_verdict_normalized(normalize_answer(pred), normalize_answer(gold))


def fast_verdict_normalized(p: str, g: str) -> bool | None:
    """`fast_verdict` on answers already through `normalize_answer` (callers that cache the normalised gold)."""
    if not p or not g:
        return None
    if p == g:
        return True
    a, b = _number(p), _number(g)
    if a is None or b is None:
        return None
    if a[1] and b[1]:
        return a[0] == b[0]
    return False if abs(a[0] - b[0]) > Fraction(1, 10**5) else None
