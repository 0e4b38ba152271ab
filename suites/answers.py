"""Answer extraction shared by the math suites (and the synthetic `arith` suite).

    last_boxed(text) -> str | None             content of the last \\boxed{...} / \\fbox{...}
    extract_number(completion) -> (value, extractor)
        value: Fraction or None; extractor: "boxed" | "hash" | "phrase" | "last_number" | None
        `#### n` counts only when the number opens the line: "#### Step 2" is a Markdown heading;
        "phrase": the last "answer is ..." / "Answer: ..." statement, so a note after it ("The answer is
        18. Note: eggs cost $2.") does not supply the answer
    parse_number(text) -> Fraction | None      one number out of a short answer string
    format_number(value) -> str                canonical text of a Fraction ("18", "-2.5", "1/3")

Numbers are compared exactly as Fractions after stripping `$`, `\\$`, thousands commas, `\\!`,
`{,}` and units in `\\text{}`: "1,000", "$1000.00" and "\\boxed{1000}" are all 1000.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A number as people write it: optional sign, optional $, thousands groups or plain digits, decimals.
_NUMBER_RE = re.compile(r"(?<![\w.])-?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])|(?<![\w.])-?\.\d+")
_HASH_RE = re.compile(r"####\s*([^\n]*)")
# GSM8K's answer line is `#### <number>`; chat models also write Markdown headings with ####: "#### Step 2",
# "#### 2. Costs". The tail counts only if it starts with the number (bold or a $ allowed) and the number is
# not an enumerator: "2." / "2)" / "2:" followed by more words.
_HASH_ANSWER_RE = re.compile(r"[*_]*\s*(?:\\?\$\s*)?[-\u2212\ufe63\uff0d]?\s?\.?\d")
# "The answer is 18" anywhere; "Answer:" / "**Final Answer:**" as a line's label. Not "to answer this,
# ..." nor "let me find the answer: first ..." (a lead-in to the working, not a statement).
_PHRASE_RE = re.compile(r"\banswer\s+is\b\s*:?|^[ \t>#*_-]*(?:the\s+)?(?:final\s+)?answer\s*(?:\*\*|__)?\s*:",
                        re.I | re.M)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\n")
_ENUMERATOR_RE = re.compile(r"[*_]*\s*\d+\s*[.):]\s*[^\W\d]")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")


def last_boxed(text: str) -> str | None:
    """The brace-balanced content of the last \\boxed{...}; None if there is none or it is unclosed."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def _clean(text: str) -> str:
    text = re.sub(r"\\text\{[^{}]*\}|\\mbox\{[^{}]*\}", " ", text)  # units: \text{ dollars}
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\$", "$")
    text = _FRAC_RE.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    # the typographic minus sign chat models write ("−5"; and its small / full-width forms). Not the en
    # dash: "10–12" is a range, not 10 and -12
    return text.replace("\u2212", "-").replace("\ufe63", "-").replace("\uff0d", "-")


def _to_fraction(token: str) -> Fraction | None:
    token = token.replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[Fraction]:
    text = _clean(text)
    out = []
    # a/b written as a fraction counts as one number
    for m in re.finditer(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)|" + _NUMBER_RE.pattern, text):
        if m.group(1) is not None:
            value = _to_fraction(m.group(1)) / _to_fraction(m.group(2)) if _to_fraction(m.group(2)) else None
        else:
            value = _to_fraction(m.group(0))
        if value is not None:
            out.append(value)
    return out


def parse_number(text: str) -> Fraction | None:
    """The last number in a short answer string (so "x = 5" gives 5), or None."""
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def extract_number(completion: str) -> tuple[Fraction | None, str | None]:
    """The model's numeric answer, trying \\boxed{} first, then `#### n` (a line whose text starts
    with the number; not a heading such as `#### Step 2`), then the last number."""
    boxed = last_boxed(completion)
    if boxed is not None and (value := parse_number(boxed)) is not None:
        return value, "boxed"
    hashes = _HASH_RE.findall(completion)
    for tail in reversed(hashes):  # the last one: a model may recite examples before answering
        if _HASH_ANSWER_RE.match(tail) and not _ENUMERATOR_RE.match(tail) and (numbers := _numbers(tail)):
            return numbers[0], "hash"  # "#### 18 (3 + 15)" is 18
    phrases = list(_PHRASE_RE.finditer(completion))
    if phrases and (value := _stated(completion[phrases[-1].end():])) is not None:
        return value, "phrase"
    value = parse_number(completion)
    return (value, "last_number") if value is not None else (None, None)


def _stated(tail: str) -> Fraction | None:
    """The number an answer statement gives: its sentence without asides in parentheses, the result
    after the last "=" ("3 + 4 = 7" is 7), then the first number ("18 dollars, or 1800 cents" is 18)."""
    sentence = _SENTENCE_END_RE.split(tail.lstrip(" \t\n*_"), maxsplit=1)[0]  # a label may stand on its own line
    sentence = re.sub(r"\([^()]*\)", " ", sentence).rsplit("=", 1)[-1]
    numbers = _numbers(sentence)
    return numbers[0] if numbers else None


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"
