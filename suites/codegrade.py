"""Shared by the code suites: pulling a program out of a completion, and grading it in the sandbox.

A code suite subclasses `CodeSuite` and implements `program(sample, completion) -> (source, how)`;
grading runs that source (solution + tests) with suites/sandbox.py. Statuses: pass | fail |
timeout | error. `Grade.extracted` is the extracted solution code (without the tests).

Extraction (`extract_code`), read as a person would, `Grade.extra["code_source"]` says which:
  * fenced: the ``` blocks (python-ish ones when there are any) that make up the program, joined in
    their order, as if pasted into one file, so a helper in one block and the function in the next
    both count and a later definition replaces an earlier one. Left out: blocks that do not parse
    (doctest transcripts, printed output, a block cut off at max tokens), blocks that define nothing
    (usage: calls, prints, asserts), blocks whose every function or class is a test or a demo (test,
    test_*, Test*, check, main, demo, example(s), run_test(s); never the entry point), and restated
    stubs (a function whose body is only a docstring, `pass` or `...`) when another block defines
    that function. If no block is left, the last block defining the function (else the first) is
    used, so a broken answer fails as itself;
  * raw: the completion as it stands (a base model's continuation), when it parses;
  * prose: otherwise, the code between the prose of an unfenced answer: each maximal run of lines
    that starts at a column-0 `import`/`from`/`def`/`class`/`@` line (or at column-0 code just above
    one, such as a constant it uses) and parses, joined as blocks are.
The program runs with `__name__` set to "solution", not "__main__": an `if __name__ == "__main__":`
demo at the end of a solution (one reading stdin, say) does not run, as in human-eval's harness,
which exec()s the program in a dict that has no `__name__` of its own. Unguarded code still runs.

The code-exec gate: a code suite can be built, listed and rendered without allow_code_exec, but
`check_ready()` (which the runner calls before any generation), `grade` and `grade_many` raise
CodeExecNotAllowed unless allow_code_exec=True (--allow-code-exec).
"""

from __future__ import annotations

import ast
import re
import textwrap

from suites.base import Grade, Sample, Suite
from suites.sandbox import ExecResult, run_many, run_program

MODULE_NAME = "solution"  # the program's __name__: anything but "__main__"
_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
_USAGE_NAME_RE = re.compile(r"test|test_\w*|Test\w*|check|main|demo|examples?|run_tests?")
_CODE_START_RE = re.compile(r"(?:import\s|from\s+[\w.]+\s+import\s|def\s|async\s+def\s|class\s|@)")
# column-0 lines that can continue a run of code; prose ("This works because...") ends it
_CODE_LINE_RE = re.compile(
    r"(?:[)\]}#@]|\"\"\"|'''"
    r"|(?:def|class|import|from|if|elif|else|for|while|try|except|finally|with|return|assert|raise|async|global|del"
    r"|pass)\b"
    r"|[A-Za-z_][\w.]*\s*(?:[-+*/%&|^]?=|\(|\[|,))")


def fenced_blocks(text: str) -> list[str]:
    """Contents of ``` fenced blocks, python-ish ones first kept in order, each dedented; an unclosed
    final fence (generation cut at max tokens) still counts."""
    # a fence inside a Markdown list item is indented with the item: dedent its body to real code
    blocks = [(lang.lower(), textwrap.dedent(body)) for lang, body in _FENCE_RE.findall(text)]
    code = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    return code or [body for _, body in blocks]


def pick_block(blocks: list[str], name: str | None) -> str | None:
    """The last block that defines `name` (models often restate the signature, then answer), else
    the first block."""
    if not blocks:
        return None
    if name:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", b, re.M)]
        if defining:
            return defining[-1]
    return blocks[0]


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def _parse_or_none(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def parses(code: str) -> bool:
    return _parse_or_none(code) is not None


def _is_stub(node: ast.AST) -> bool:
    """A function whose body is only a docstring, `pass` or `...`."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return all(isinstance(st, ast.Pass) or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)
                                            and (isinstance(st.value.value, str) or st.value.value is Ellipsis))
               for st in node.body)


def _is_program_part(tree: ast.Module, entry: str | None) -> bool:
    """Defines something, and not only tests or demos (the entry point itself is never one)."""
    named = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    if not any(isinstance(n, _DEFINITIONS) for n in tree.body):
        return False
    return entry in named or not named or not all(_USAGE_NAME_RE.fullmatch(name) for name in named)


def join_program(pieces: list[str], entry: str | None) -> str | None:
    """The pieces that make up the program (see the module docstring), stubs of functions defined
    elsewhere cut out, joined in order; None when no piece qualifies."""
    kept = [(piece, tree) for piece in pieces
            if (tree := _parse_or_none(piece)) is not None and _is_program_part(tree, entry)]
    real = {n.name for _, tree in kept for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not _is_stub(n)}
    joined = []
    for piece, tree in kept:
        lines = piece.splitlines()
        for node in reversed(tree.body):  # from the bottom, so earlier line numbers stay valid
            if _is_stub(node) and node.name in real:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                del lines[first - 1:node.end_lineno]
        if text := "\n".join(lines).strip("\n"):
            joined.append(text)
    return "\n\n".join(joined) if joined else None


def _code_run(lines: list[str], start: int) -> int | None:
    """End (exclusive) of the longest run of lines from `start` that parses and stops before the
    first column-0 line of prose; None if none does."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t" or _CODE_LINE_RE.match(lines[end])):
        end += 1
    while end > start:
        try:
            ast.parse("\n".join(lines[start:end]))
            return end
        except SyntaxError as exc:  # the run can only end before the line the parser choked on
            end = min(end - 1, start + (exc.lineno or 1) - 1)
        except ValueError:  # a null byte
            return None
    return None


def _run_start(lines: list[str], start: int, end: int, floor: int) -> int:
    """Where a run found at `start` really begins: column-0 code just above it, such as the constant
    `MAX = 3000` a function uses, belongs to it when the whole still parses."""
    top = start
    while top > floor and (not lines[top - 1].strip() or _CODE_LINE_RE.match(lines[top - 1])):
        top -= 1
    return next((k for k in range(top, start) if lines[k].strip() and parses("\n".join(lines[k:end]))), start)


def code_in_prose(text: str, entry: str | None) -> str | None:
    """The code of an answer that is not fenced but written between prose; None if there is none."""
    lines, runs, i, previous_end = text.splitlines(), [], 0, 0
    while i < len(lines):
        end = _code_run(lines, i) if _CODE_START_RE.match(lines[i]) else None
        if end is None:
            i += 1
            continue
        runs.append("\n".join(lines[_run_start(lines, i, end, previous_end):end]))
        i = previous_end = end
    return join_program(runs, entry)


def extract_code(completion: str, entry: str | None, raw: str, raw_runs: bool) -> tuple[str, str]:
    """(code, how) as the module docstring says; `raw` is the completion as the suite would run it
    unfenced, and `raw_runs` whether that parses (with the prompt, for a continuation)."""
    blocks = fenced_blocks(completion)
    if blocks:
        return join_program(blocks, entry) or pick_block(blocks, entry), "fenced"
    if not raw_runs and (prose := code_in_prose(completion, entry)) is not None:
        return prose, "prose"
    return raw, "raw"


class CodeSuite(Suite):
    needs_code_exec = True

    def __init__(self, *args, timeout_s: float = 20.0, memory_mb: int = 1024, **kwargs):
        super().__init__(*args, **kwargs)
        # Per program, all its tests included. Generous: MBPP 123's reference takes ~4 s of CPU,
        # and on shared cores wall time is a multiple of that (EvalPlus #5).
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        """(solution code, full program = solution + tests, how it was extracted)."""
        raise NotImplementedError

    def _to_grade(self, code: str, how: str, result: ExecResult) -> Grade:
        extra = {"exec_s": round(result.wall_s, 4), "isolation": result.isolation, "code_source": how}
        return Grade(result.status == "pass", code, result.status, result.detail, extra)

    def grade(self, sample: Sample, completion: str) -> Grade:
        self.check_ready()
        code, source, how = self.program(sample, completion)
        result = run_program(source, timeout_s=self.timeout_s, memory_mb=self.memory_mb, module_name=MODULE_NAME)
        return self._to_grade(code, how, result)

    def grade_many(self, pairs: list[tuple[Sample, str]], workers: int | None = None) -> list[Grade]:
        """All programs on a pool sized to the cores (or `workers`), results in input order."""
        self.check_ready()
        built = [self.program(sample, completion) for sample, completion in pairs]
        results = run_many([source for _, source, _ in built], timeout_s=self.timeout_s, workers=workers,
                           memory_mb=self.memory_mb, module_name=MODULE_NAME)
        return [self._to_grade(code, how, result) for (code, _, how), result in zip(built, results)]
