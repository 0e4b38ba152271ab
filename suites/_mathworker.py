"""The math-verify worker: `python suites/_mathworker.py`, started by suites/mathgrade.py.

It reads one JSON request per line on stdin, `[gold_answer, completion]`, and writes one JSON reply
per line, `[equal, predicted, status, detail]`, until stdin closes. Run as a script by its path, not
with multiprocessing: a spawned multiprocessing worker re-imports the caller's `__main__`, which kills
a caller that is a plain script without an `if __name__ == "__main__":` guard. Imports nothing from
the package, so it works whatever the caller's sys.path was.

Before verifying, both answers are normalised for what math-verify misreads (Math-Verify 0.x):
  * the degree sign: `90°`, `90\\degree`, `90\\textdegree` become `90^{\\circ}` (which it equates with 90);
  * spaces that group digits: `58\\,500`, `58\\;500`, `58\\:500`, `58\\ 500`, `58~500`,
    `58\\thinspace 500` and the Unicode spaces U+00A0, U+2009, U+202F, U+2006, U+2008 between a digit
    and a group of exactly three digits are dropped (it reads `58\\,500` as 558). `{,}` and `,\\!` it
    already reads as thousands separators; a comma before fewer or more than three digits is left alone.
"""

import json
import os
import re
import sys

_DEGREE_RE = re.compile(r"\^\s*(?:\{\s*°\s*\}|°)|°|\\degree\b|\\textdegree\b")
_GROUP_SPACE = r"\\[,;:]|\\ |\\thinspace\s*|~|[\u00a0\u2009\u202f\u2006\u2008]"
_DIGIT_GROUP_RE = re.compile(rf"(?<=\d)(?:{_GROUP_SPACE})(?=\d{{3}}(?!\d))")


def normalize_for_verify(text: str) -> str:
    text = _DEGREE_RE.sub(r"^{\\circ}", text)
    return _DIGIT_GROUP_RE.sub("", text)


def verify_pair(gold_answer: str, completion: str) -> tuple[bool, str | None, str, str]:
    """The gold is re-boxed: bare LaTeX such as \\dfrac{9}{7} parses to nothing otherwise
    (Math-Verify #70). Gold goes first: verify() is asymmetric by design."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_answer, completion = normalize_for_verify(gold_answer), normalize_for_verify(completion)
    gold = []
    for candidate in ("\\boxed{" + gold_answer + "}", "$" + gold_answer + "$", gold_answer):
        gold = parse(candidate, parsing_timeout=None)
        if gold:
            break
    if not gold:
        return False, None, "error", f"gold answer {gold_answer!r} did not parse"
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    predicted = parse(completion, extraction_config=config, parsing_timeout=None)
    if not predicted:
        return False, None, "no_answer", "math-verify extracted nothing"
    text = str(predicted[-1]) if len(predicted) > 1 else str(predicted[0])
    return bool(verify(gold, predicted, timeout_seconds=None)), text, "ok", ""


def serve(requests, replies) -> None:
    for line in requests:
        try:
            reply = verify_pair(*json.loads(line))
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply = (False, None, "error", f"{type(exc).__name__}: {exc}"[:300])
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every parse failure
    # Replies go to a private copy of stdout; anything a library prints lands on stderr instead.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    serve(sys.stdin, replies)


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the package's directory: its modules must not shadow anything
    main()
