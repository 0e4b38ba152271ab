"""Sweep files (TOML) -> a validated list of cells, with line-precise errors before any model loads.

    description = "what this sweep answers"      # optional
    [defaults]                                   # optional; any cell key; a list is a grid axis
    model = "pdbench-toy"
    suite = ["arith", "toy-code"]
    limit = 20
    [[sweep]]                                    # one group per decoder family
    decoder = "ar"
    [[sweep]]
    decoder = "sdlm-conf"
    batch_size = [1, 4]                          # lists multiply (Cartesian product) ...
    name = "sdlm-b{block_size}-t{threshold}-bs{batch_size}"   # optional readable-name template
    [sweep.params]
    threshold = [0.5, 0.9, 0.98]
    [sweep.zip.params]                           # ... zipped lists advance together
    block_size = [4, 8]
    max_steps_per_block = [4, 8]

Every error names the file and line of the offending key; all errors are reported at once.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from decoders.family import override_error
from harness.cells import DTYPES, Cell

# cell key -> (python type, check, what is allowed)
_POS = (lambda v: v >= 1, "an int >= 1")
CELL_KEYS: dict[str, tuple[type, Any, str]] = {
    "model": (str, lambda v: bool(v.strip()), "a model id, path or alias"),
    "dtype": (str, lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "device": (str, lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto, cpu, mps, cuda or cuda:N"),
    "decoder": (str, None, "a registered decoder"),
    "suite": (str, None, "a registered suite"),
    "limit": (int, *_POS),
    "shuffle": (bool, None, "true or false"),
    "seed": (int, lambda v: v >= 0, "an int >= 0"),
    "batch_size": (int, *_POS),
    "max_new_tokens": (int, *_POS),
    "repeats": (int, *_POS),
    "add_mask_token": (bool, None, "true or false"),
    "family": (str, lambda v: override_error(v) is None,
               "a model family name (llada, dream, sdlm, ...) and/or fact=value pairs, comma-separated"),
    "allow_code_exec": (bool, None, "true or false"),
}
GROUP_KEYS = set(CELL_KEYS) | {"name", "params", "zip"}
TOP_KEYS = {"description", "defaults", "sweep"}
REQUIRED = ("model", "decoder", "suite")


class SweepError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid sweep:\n  " + "\n  ".join(errors))


class _Lines:
    """Maps key paths like ("sweep", 1, "params", "threshold") to 1-based line numbers of the raw
    TOML text. tomllib keeps no positions, so the text is scanned here: table headers, `key =`
    lines, dotted keys and one level of inline tables are enough for sweep files."""

    _key = re.compile(r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=')

    def __init__(self, text: str):
        self.where: dict[tuple, int] = {}
        table: tuple = ()
        counts: dict[str, int] = {}
        for no, line in enumerate(text.splitlines(), 1):
            head = re.match(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?", line)
            if head:
                parts = tuple(self._split(head.group(2)))
                if head.group(1) == "[[":
                    self.where.setdefault(parts[:1], no)
                    counts[parts[0]] = counts.get(parts[0], -1) + 1
                    table = (parts[0], counts[parts[0]], *parts[1:])
                elif parts[0] in counts:  # [sweep.params] belongs to the latest [[sweep]]
                    table = (parts[0], counts[parts[0]], *parts[1:])
                else:
                    table = parts
                self.where.setdefault(table, no)
                continue
            m = self._key.match(line)
            if not m:
                continue
            path = table + tuple(self._split(m.group(1)))
            self.where.setdefault(path, no)
            rest = line[m.end():].strip()
            if rest.startswith("{"):
                for inner in re.finditer(r'[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=', rest):
                    self.where.setdefault(path + (inner.group(1).strip("\"'"),), no)

    @staticmethod
    def _split(dotted: str) -> list[str]:
        return [p.strip().strip("\"'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', dotted)]

    def line(self, path: tuple) -> int | None:
        for n in range(len(path), 0, -1):
            if path[:n] in self.where:
                return self.where[path[:n]]
        return None


def _hint(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(path: tuple) -> str:
    if path and path[0] == "sweep" and len(path) > 1:
        return f"[[sweep]] #{path[1] + 1}"
    return f"[{path[0]}]" if len(path) > 1 else "top level"


class _Checker:
    def __init__(self, source: str, text: str):
        self.source, self.lines, self.errors = source, _Lines(text), []

    def error(self, path: tuple, msg: str) -> None:
        if self.source.startswith("<"):  # built from command-line flags: no lines to point at
            err = f"{self.source}: {msg}"
        else:
            line = self.lines.line(path)
            err = f"{self.source}:{line if line else '?'}: {_where(path)}: {msg}"
        if err not in self.errors:
            self.errors.append(err)

    def cell_value(self, path: tuple, key: str, value: Any) -> None:
        typ, ok, allowed = CELL_KEYS[key]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            self.error(path, f"{key!r} is an empty list")
        for v in values:
            good_type = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
            if not good_type:
                self.error(path, f"{key!r} must be {allowed}, got {type(v).__name__} {v!r}")
            elif ok is not None and not ok(v):
                self.error(path, f"{key!r} must be {allowed}, got {v!r}")
            elif key == "decoder":
                self.known(path, "decoder", v)
            elif key == "suite":
                self.known(path, "suite", v)

    def known(self, path: tuple, kind: str, name: str) -> None:
        import decoders
        import suites

        names = decoders.available() if kind == "decoder" else suites.available()
        if name not in names:
            self.error(path, f"unknown {kind} {name!r}{_hint(name, names)} (available: {', '.join(names)})")

    def table(self, path: tuple, table: Any, allowed: set[str]) -> dict:
        if not isinstance(table, dict):
            self.error(path, f"must be a table, got {type(table).__name__}")
            return {}
        for key in table:
            if key not in allowed:
                self.error(path + (key,), f"unknown key {key!r}{_hint(key, allowed)}; allowed: {', '.join(sorted(allowed))}")
        return table


def _param_type_ok(default: Any, v: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(v, bool)
    if isinstance(default, int):
        return isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return default is None or isinstance(v, type(default))


def _axes(fixed: dict, params: dict, zipped: dict, zipped_params: dict) -> list[dict]:
    """Expand one group into a list of {"cell": {...}, "params": {...}} combinations."""
    axes: list[list[tuple[tuple[str, str, Any], ...]]] = []
    for k, v in fixed.items():
        axes.append([(("cell", k, x),) for x in v] if isinstance(v, list) else [(("cell", k, v),)])
    for k, v in params.items():
        axes.append([(("params", k, x),) for x in v] if isinstance(v, list) else [(("params", k, v),)])
    zip_cols = [("cell", k, v) for k, v in zipped.items()] + [("params", k, v) for k, v in zipped_params.items()]
    if zip_cols:
        n = len(zip_cols[0][2])
        axes.append([tuple((kind, k, v[i]) for kind, k, v in zip_cols) for i in range(n)])
    combos = []
    for choice in itertools.product(*axes):
        combo: dict[str, dict] = {"cell": {}, "params": {}}
        for group in choice:
            for kind, k, v in group:
                combo[kind][k] = v
        combos.append(combo)
    return combos


def parse_sweep(text: str, source: str = "<sweep>", overrides: dict | None = None) -> list[Cell]:
    """Parse and validate a sweep; raise SweepError listing every problem with its line."""
    import decoders

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message already says "(at line N, column M)"
        raise SweepError([f"{source}: TOML syntax error: {e}"]) from None
    chk = _Checker(source, text)
    chk.table((), doc, TOP_KEYS)
    defaults = chk.table(("defaults",), doc.get("defaults", {}), set(CELL_KEYS))
    defaults = {k: v for k, v in defaults.items() if k in CELL_KEYS}
    for k, v in defaults.items():
        chk.cell_value(("defaults", k), k, v)
    groups = doc.get("sweep", [])
    if not isinstance(groups, list) or not groups:
        chk.error(("sweep",), "needs at least one [[sweep]] table")
        groups = []
    cells: list[Cell] = []
    group_of: list[int] = []  # cells[k] came from [[sweep]] #group_of[k]
    for i, group in enumerate(groups):
        gp = ("sweep", i)
        group = chk.table(gp, group, GROUP_KEYS)
        # command-line overrides (--limit, --batch-size, ...) beat the file; argparse typed them
        fixed = {**defaults, **{k: v for k, v in group.items() if k in CELL_KEYS}, **(overrides or {})}
        for k, v in group.items():
            if k in CELL_KEYS:
                chk.cell_value(gp + (k,), k, v)
        params = group.get("params", {})  # its keys are checked against the decoder in _build
        if not isinstance(params, dict):
            chk.error(gp + ("params",), "'params' must be a table")
            params = {}
        zipped = chk.table(gp + ("zip",), group.get("zip", {}), set(CELL_KEYS) | {"params"})
        zipped_params = zipped.get("params", {})
        zipped = {k: v for k, v in zipped.items() if k in CELL_KEYS}
        zip_lists = [(gp + ("zip", k), v) for k, v in zipped.items()] + [
            (gp + ("zip", "params", k), v) for k, v in (zipped_params if isinstance(zipped_params, dict) else {}).items()
        ]
        lengths: dict[int, tuple] = {}
        for path, v in zip_lists:
            if not isinstance(v, list) or not v:
                chk.error(path, f"zipped {path[-1]!r} must be a non-empty list, got {v!r}")
            else:
                lengths.setdefault(len(v), path)
        if len(lengths) > 1:  # point at the first list that disagrees with the first one
            (n0, p0), (n1, p1) = list(lengths.items())[:2]
            chk.error(p1, f"zipped lists must have equal lengths: {p1[-1]!r} has {n1}, {p0[-1]!r} has {n0}")
        for path, v in zip_lists:
            if path[-2] == "zip" and isinstance(v, list):
                chk.cell_value(path, path[-1], v)
        for k in REQUIRED:
            if k not in fixed and k not in zipped:
                chk.error(gp, f"missing required key {k!r} (set it here or in [defaults])")
        if chk.errors or len(lengths) > 1:
            continue
        template = group.get("name")
        if template is not None and not isinstance(template, str):
            chk.error(gp + ("name",), f"'name' must be a string template, got {template!r}")
            template = None
        for combo in _axes(fixed, params, zipped, zipped_params if isinstance(zipped_params, dict) else {}):
            cell = _build(chk, gp, combo, template, decoders)
            if cell is not None:
                cells.append(cell)
                group_of.append(i)
    if not chk.errors:
        seen: dict[str, int] = {}
        for cell, i in zip(cells, group_of):
            if cell.name in seen:
                chk.error(("sweep", i, "name"), f"cell name {cell.name!r} is not unique (also in [[sweep]] "
                          f"#{seen[cell.name] + 1}); add the varying parameter to the name template")
            seen.setdefault(cell.name, i)
    if chk.errors:
        raise SweepError(chk.errors)
    return cells


def _build(chk: _Checker, gp: tuple, combo: dict, template: str | None, decoders) -> Cell | None:
    name = combo["cell"]["decoder"]
    try:
        cls = decoders.get_class(name)
    except KeyError:
        return None  # already reported by cell_value
    allowed = {f.name: f.default for f in fields(cls)}
    ok = True
    for k, v in combo["params"].items():
        path = gp + ("params", k) if ("sweep", gp[1], "params", k) in chk.lines.where else gp + ("zip", "params", k)
        if k not in allowed:
            chk.error(path, f"decoder {name!r} has no parameter {k!r}{_hint(k, allowed)}; its parameters: {', '.join(allowed)}")
            ok = False
        elif not _param_type_ok(allowed[k], v):
            chk.error(path, f"decoder {name!r} parameter {k!r} must be {type(allowed[k]).__name__}, got {type(v).__name__} {v!r}")
            ok = False
    if not ok:
        return None
    cell = Cell(**combo["cell"], params=dict(combo["params"]))
    try:
        decoders.get(name, **cell.decoder_params())
    except ValueError as e:  # DecoderConfigError: point at the parameter it names
        bad = re.search(r"parameter (\w+)", str(e))
        key = bad.group(1) if bad and bad.group(1) in combo["params"] else None
        path = gp + ("params", key) if key else gp + ("decoder",)
        if key and path not in chk.lines.where:
            path = gp + ("zip", "params", key)
        chk.error(path, f"bad value for decoder {name!r}: {e}")
        return None
    if template:
        try:
            cell.name = template.format(**{**cell.to_dict(), **cell.decoder_params()})
        except (KeyError, IndexError, ValueError) as e:
            chk.error(gp + ("name",), f"name template {template!r} refers to an unknown field: {e}")
    return cell


def load_sweep(path: str | Path, overrides: dict | None = None) -> list[Cell]:
    path = Path(path)
    return parse_sweep(path.read_text(), str(path), overrides)


def presets_dir() -> Path:
    return Path(__file__).resolve().parent / "presets"


def available_presets() -> dict[str, str]:
    """name -> description of every preset shipped in harness/presets/."""
    out = {}
    for p in sorted(presets_dir().glob("*.toml")):
        try:
            out[p.stem] = str(tomllib.loads(p.read_text()).get("description", ""))
        except tomllib.TOMLDecodeError as e:
            out[p.stem] = f"(unreadable: {e})"
    return out


def preset_path(name: str) -> Path:
    path = presets_dir() / f"{name}.toml"
    if not path.exists():
        names = list(available_presets())
        raise KeyError(f"unknown preset {name!r}{_hint(name, names)} (available: {', '.join(names) or 'none'})")
    return path


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def single_cell_toml(cell_keys: dict[str, Any], params: dict[str, Any]) -> str:
    """A one-group sweep from command-line flags, so flags get exactly the sweep file's checks."""
    lines = ["[[sweep]]"] + [f"{k} = {toml_value(v)}" for k, v in cell_keys.items() if v is not None]
    if params:
        lines += ["[sweep.params]"] + [f'"{k}" = {toml_value(v)}' for k, v in params.items()]
    return "\n".join(lines) + "\n"
