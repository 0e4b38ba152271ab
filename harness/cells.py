"""A cell: one model x one decoder configuration x one suite x one batch size, run `repeats` times.

The cell hash is the store's reuse key (with sample_id and repeat). It covers everything that can
change a sample's output, and nothing that cannot: `limit` and `repeats` only choose *which* rows
exist, so growing either re-uses every row already stored, while any change of model, dtype,
decoder parameter, prompt format, batch size or library version gives a new hash and a fresh run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class Cell:
    model: str
    decoder: str
    suite: str
    params: dict[str, Any] = field(default_factory=dict)  # decoder hyper-parameters as given
    dtype: str = "auto"
    device: str = "auto"
    limit: int | None = None  # first N samples of the suite (None = all)
    shuffle: bool = False  # shuffle the suite with `seed` before taking `limit`
    seed: int = 0  # decoder seed (unless params set one) and suite shuffle seed
    batch_size: int = 1
    max_new_tokens: int = 256
    repeats: int = 1
    add_mask_token: bool = False
    family: str = ""  # override of the detected model family (decoders/family.py), "" = as detected
    allow_code_exec: bool = False
    name: str = ""  # readable; never part of the reuse key
    origin: str = ""  # where the cell was defined ("sweep.toml: [[sweep]] #2", "the flags"): for error messages

    def __post_init__(self) -> None:
        if not self.name:
            self.name = default_name(self)

    def decoder_params(self) -> dict[str, Any]:
        """Parameters passed to decoders.get(): the cell seed is the decoder seed unless overridden."""
        return {"seed": self.seed, **self.params}

    def model_key(self) -> tuple:
        """Cells sharing this key share one loaded model."""
        return (self.model, self.dtype, self.device, self.add_mask_token, self.family)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def short_model(model: str) -> str:
    return Path(model.rstrip("/")).name.removesuffix(".gguf") or model


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def default_name(cell: Cell) -> str:
    params = ",".join(f"{k}={fmt_value(v)}" for k, v in sorted(cell.params.items()))
    dec = f"{cell.decoder}[{params}]" if params else cell.decoder
    return f"{short_model(cell.model)}/{cell.suite}/{dec}/bs{cell.batch_size}"


@lru_cache(maxsize=None)
def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist != "pdbench":
            return "absent"
    # running from a source tree that is not pip-installed: read pyproject.toml
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return found.group(1) if found else "unknown"


# harness modules that cannot change a stored row (what is decoded, or how it is graded): they only
# read, summarise, draw or describe. Every other module of harness/, decoders/ and suites/ is hashed,
# so a new module counts by default.
# distributed.py only moves cells to Ray workers and their rows back (the rows are built by runner.py
# and group.py, which are hashed): a local and a Ray run of a cell share its hash.
NOT_OUTPUT_CODE = frozenset({"__init__.py", "__main__.py", "cli.py", "report.py", "plots.py", "manifest.py",
                             "verify.py", "bench.py", "stats.py", "telemetry.py", "load.py", "aup.py", "tally.py",
                             "distributed.py"})


def code_files(decoder_cls: type, suite_cls: type) -> list[Path]:
    """Every source file whose code can change this cell's rows: the decoder's and the suite's own
    modules and their bases', every shared module of the two packages (all but the modules that
    define *other* registered decoders or suites), the registry, and the harness modules that load
    the model, build the rows and run the batches."""
    import decoders
    import harness
    import pdbench_registry
    import suites

    files: set[Path] = {Path(pdbench_registry.__file__).resolve()}
    for package, cls in ((decoders, decoder_cls), (suites, suite_cls)):
        own = {Path(inspect.getfile(k)).resolve() for k in inspect.getmro(cls) if k is not object}
        others = {Path(inspect.getfile(package.get_class(n))).resolve() for n in package.available()} - own
        files |= own | {p.resolve() for p in Path(package.__file__).parent.glob("*.py")} - others
    harness_dir = Path(harness.__file__).parent
    files |= {p.resolve() for p in harness_dir.glob("*.py") if p.name not in NOT_OUTPUT_CODE}
    return sorted(files)


@lru_cache(maxsize=None)
def code_digest(decoder_cls: type, suite_cls: type) -> str:
    """Hash of code_files(): a change to any of them gives a new cell hash, so rows computed by the old
    code are never reused (a version number would be forgotten)."""
    h = hashlib.sha256()
    for path in code_files(decoder_cls, suite_cls):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def weights_fingerprint(hf_model, per_tensor: int = 256) -> str:
    """A hash of strided samples of every weight tensor: a retrained checkpoint in the same folder
    (no hub revision to tell) gets a new cell hash, and it costs one small gather per tensor."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in hf_model.state_dict().items():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // per_tensor)
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(flat[::step][:per_tensor].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def describe_for_hash(adapter) -> dict[str, Any]:
    """adapter.describe() plus what it cannot see: the weights themselves and the chat template
    (prompt ids depend on it, and a local tokenizer can change without a revision)."""
    desc = dict(adapter.describe())
    if getattr(adapter, "hf_model", None) is not None:
        desc["weights"] = weights_fingerprint(adapter.hf_model)
    template = getattr(getattr(adapter, "tokenizer", None), "chat_template", None)
    desc["chat_template_sha"] = hashlib.sha256(str(template).encode()).hexdigest()[:12] if template else None
    return desc


def hash_payload(cell: Cell, decoder, suite, model_desc: dict[str, Any]) -> dict[str, Any]:
    """Everything that can change a stored row, as plain JSON. `decoder` is the built Decoder (so
    defaults are included: a changed default changes the hash), `suite` the built Suite."""
    return {
        "model": {k: v for k, v in sorted(model_desc.items()) if k not in ("device",)},
        "device_type": str(model_desc.get("device", cell.device)).split(":")[0],
        "dtype": str(model_desc.get("dtype", cell.dtype)),
        "add_mask_token": cell.add_mask_token,
        "decoder": cell.decoder,
        "decoder_params": decoder.params(),
        "code": code_digest(type(decoder), type(suite)),
        "suite": cell.suite,
        "suite_version": str(suite.version),
        "prompt_hash": suite.prompt_hash,
        "shuffle": [cell.shuffle, cell.seed if cell.shuffle else None],
        "batch_size": cell.batch_size,
        "max_new_tokens": cell.max_new_tokens,
        "versions": {d: package_version(d) for d in ("pdbench", "torch", "transformers")},
    }


def cell_hash(cell: Cell, decoder, suite, model_desc: dict[str, Any]) -> str:
    blob = json.dumps(hash_payload(cell, decoder, suite, model_desc), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
