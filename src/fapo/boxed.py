"""Find the content of the last `\\boxed{...}` in a text, in linear time.

Shared by answer verification (`fapo.verify`) and the GenRM verdict protocol (`fapo.grm.prompt`).
Knows nothing about what the content means.
"""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Return the content of the LAST `\\boxed{...}` (or `\\fbox{...}`) in `text`.

    The last box command is the one that counts: if its braces never close, the answer is None
    (an earlier, well-formed box is not used instead: the text's final word is broken).
    Backslash-escaped braces (`\\{`, `\\}`) do not count as braces. One backwards search and
    one forward scan: O(len(text)) for any input.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    i = start + 1
    while i < len(text) and text[i].isalpha():  # skip the command name
        i += 1
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    open_at = i
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def count_boxed(text: str) -> int:
    """Number of box commands in `text` (used by strict answer rules)."""
    return sum(text.count(cmd) for cmd in _BOX_COMMANDS)


def single_final_box(text: str) -> str | None:
    """The content of the text's only `\\boxed{...}` when nothing follows it but whitespace, `.`, `$` or `\\]`
    (the closers of `$\\boxed{5}$.` and `\\[\\boxed{5}\\]`); else None.

    The strict answer rule for RL (`fapo.outcome`), where a lenient rule invites reward hacking: a policy
    that learns to pad with `}}}}` after a right box, to keep writing after its answer, or to box several.
    """
    if count_boxed(text) != 1:
        return None
    content = last_boxed(text)
    if content is None:
        return None
    box = "\\boxed{" + content + "}"
    at = text.rfind(box)
    if at < 0 or text[at + len(box) :].strip().strip(".$").replace("\\]", "").strip():
        return None
    return content


def is_single_final_box(text: str) -> bool:
    """Whether `single_final_box` finds an answer."""
    return single_final_box(text) is not None
