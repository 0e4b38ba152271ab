"""Sweep files (TOML) -> a validated list of cells, with line-precise errors before any model loads.

    description = "what this sweep answers"      # optional
    [run]                                        # optional: how the cells run (flags override)
    interleave = true                            # batches of cells sharing model, suite, batch size, budget in turns
    timing_repeats = 1                           # time each batch K times, keep the median
    threads = 1                                  # torch CPU threads ("auto": chosen for the model and cores)
    executor = "ray"                             # run the cells as Ray tasks (docs/ray.md); default "local"
    ray_address = "auto"                         # "" starts a local Ray; "auto", "ray://host:port": a cluster
    num_gpus = 1                                 # GPUs per Ray task (default: 1 for CUDA cells, else 0)
    max_retries = 2                              # Ray re-runs a task whose worker or node died
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

Every error names the file and the key path of the offending value (`[[sweep]] #2 params.threshold`;
flags, for a cell built from the command line); all errors are reported at once. Parameter *names*
and types are checked here against the decoder's fields; their values are checked when the runner
builds each decoder (once, before any model loads), and those errors name the same key path.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import dataclass, fields
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
# [run] key -> (python type, check, what is allowed)
RUN_KEYS: dict[str, tuple[type, Any, str]] = {
    "interleave": (bool, None, "true or false"),
    # odd, so that the median is one measured run (its outputs, its per-step times), never an average
    "timing_repeats": (int, lambda v: v >= 1 and v % 2 == 1, "an odd int >= 1 (1, 3, 5, ...)"),
    "threads": ((int, str), lambda v: v == "auto" or (isinstance(v, int) and v >= 1), '"auto" or an int >= 1'),
    "executor": (str, lambda v: v in ("local", "ray"), '"local" or "ray"'),
    "ray_address": (str, None, '"" (a local Ray), "auto" or "ray://host:port"'),
    "num_gpus": ((int, float), lambda v: not isinstance(v, bool) and v >= 0, "a number >= 0"),
    "max_retries": (int, lambda v: v >= 0, "an int >= 0"),
}
TOP_KEYS = {"description", "run", "defaults", "sweep"}
REQUIRED = ("model", "decoder", "suite")


class SweepError(ValueError):
    def __init__(self, errors: list[str], source: str = "<sweep>"):
        self.errors = errors
        head = "" if source == COMMAND_LINE else f"{source}: invalid sweep:\n  "
        super().__init__(head + ("\n" if source == COMMAND_LINE else "\n  ").join(errors))


COMMAND_LINE = "<command line>"  # the source name of a cell built from run's flags
FROM_FLAGS = "the flags"  # such a cell's origin, when no single flag is to blame


def _hint(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def key_path(path: tuple) -> str:
    """("sweep", 1, "params", "threshold") -> "[[sweep]] #2 params.threshold"."""
    if not path:
        return "top level"
    if path[0] == "sweep" and len(path) > 1 and isinstance(path[1], int):
        rest = ".".join(map(str, path[2:]))
        return f"[[sweep]] #{path[1] + 1}" + (f" {rest}" if rest else "")
    if len(path) == 1:
        return f"top-level key {path[0]!r}"
    return f"[{path[0]}] {'.'.join(map(str, path[1:]))}"


def flag_for(path: tuple) -> str:
    """The run flag a key path came from, for cells built from the command line."""
    if "params" in path and path[-1] != "params":
        return f"-p {path[-1]}"
    if path and path[-1] not in ("sweep", "params") and not isinstance(path[-1], int):
        return "--" + str(path[-1]).replace("_", "-")
    return FROM_FLAGS


def where(source: str, path: tuple) -> str:
    """How an error names the place: the flag, or the file and key path."""
    return flag_for(path) if source == COMMAND_LINE else f"{source}: {key_path(path)}"


class _Checker:
    def __init__(self, source: str):
        self.source, self.errors = source, []

    def error(self, path: tuple, msg: str) -> None:  # SweepError's heading names the file
        err = f"{flag_for(path) if self.source == COMMAND_LINE else key_path(path)}: {msg}"
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


@dataclass
class Sweep:
    cells: list[Cell]
    run: dict[str, Any]  # the validated [run] table
    description: str = ""


def parse_sweep(text: str, source: str = "<sweep>", overrides: dict | None = None) -> Sweep:
    """Parse and validate a sweep; raise SweepError listing every problem with its key path."""
    import decoders

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message already says "(at line N, column M)"
        raise SweepError([f"TOML syntax error: {e}"], source) from None
    chk = _Checker(source)
    chk.table((), doc, TOP_KEYS)
    run = chk.table(("run",), doc.get("run", {}), set(RUN_KEYS))
    for k, v in run.items():
        if k in RUN_KEYS:
            typ, ok, allowed = RUN_KEYS[k]
            good = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
            if not good or (ok is not None and not ok(v)):
                chk.error(("run", k), f"{k!r} must be {allowed}, got {v!r}")
    flags = _Checker(COMMAND_LINE)  # overrides are named by their flag, whatever file they override
    for k, v in (overrides or {}).items():
        flags.cell_value((k,), k, v)
    chk.errors += flags.errors
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
        if not isinstance(zipped_params, dict):
            chk.error(gp + ("zip", "params"), "'zip.params' must be a table")
            zipped_params = {}
        zipped = {k: v for k, v in zipped.items() if k in CELL_KEYS}
        zip_lists = [(gp + ("zip", k), v) for k, v in zipped.items()] + [
            (gp + ("zip", "params", k), v) for k, v in zipped_params.items()]
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
        missing = [k for k in REQUIRED if k not in fixed and k not in zipped]
        for k in missing:
            chk.error(gp, f"missing required key {k!r} (set it here or in [defaults])")
        if missing or len(lengths) > 1:
            continue
        template = group.get("name")
        if template is not None and not isinstance(template, str):
            chk.error(gp + ("name",), f"'name' must be a string template, got {template!r}")
            template = None
        for combo in _axes(fixed, params, zipped, zipped_params):
            combo["cell"].update(overrides or {})  # flags win over zipped lists too
            cell = _build(chk, gp, combo, template, decoders, set(zipped_params))
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
        raise SweepError(chk.errors, source)
    return Sweep(cells, {k: v for k, v in run.items() if k in RUN_KEYS}, str(doc.get("description", "")))


def _build(chk: _Checker, gp: tuple, combo: dict, template: str | None, decoders, zipped: set[str]) -> Cell | None:
    """One cell, its parameter names and types checked against the decoder's fields (their values
    are checked when the runner builds the decoder)."""
    name = combo["cell"]["decoder"]
    try:
        cls = decoders.get_class(name)
    except KeyError:
        return None  # already reported by cell_value
    allowed = {f.name: f.default for f in fields(cls)}
    ok = True
    for k, v in combo["params"].items():
        path = gp + ("zip", "params", k) if k in zipped else gp + ("params", k)
        if k not in allowed:
            chk.error(path, f"decoder {name!r} has no parameter {k!r}{_hint(k, allowed)}; its parameters: {', '.join(allowed)}")
            ok = False
        elif not _param_type_ok(allowed[k], v):
            chk.error(path, f"decoder {name!r} parameter {k!r} must be {type(allowed[k]).__name__}, got {type(v).__name__} {v!r}")
            ok = False
    if not ok:
        return None
    cell = Cell(**combo["cell"], params=dict(combo["params"]), origin=where(chk.source, gp))
    if template:
        try:
            cell.name = template.format(**{**cell.to_dict(), **cell.decoder_params()})
        except (KeyError, IndexError, ValueError) as e:
            chk.error(gp + ("name",), f"name template {template!r} refers to an unknown field: {e}")
    return cell


def load_sweep(path: str | Path, overrides: dict | None = None) -> Sweep:
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
