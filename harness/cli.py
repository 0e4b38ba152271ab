"""The `pdbench` command: run, report, plot, list, verify, bench.

`pdbench run` with no arguments runs the `toy` preset. Every run ends by writing report.md, the
plots and printing the summary table, so one command gives the whole answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import warnings
from datetime import datetime
from pathlib import Path

DEFAULT_PRESET = "toy"
# flags that, next to --sweep/--preset, override that key in every cell
OVERRIDES = ("model", "dtype", "device", "limit", "batch_size", "max_new_tokens", "repeats", "seed", "family")
FAMILY_HELP = ("override the model family detected from the checkpoint: a name (llada, dream, sdlm, sdar, "
               "fast-dllm-v2, ar) and/or fact=value pairs, e.g. attention=bidirectional,logits=in-place")


def parse_param(text: str) -> tuple[str, object]:
    """`-p name=value`; the value is read as a TOML literal (0.9, 4, true, "x"), else as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-p expects name=value, got {text!r}")
    name, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return name.strip(), value


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="run one cell, a sweep file or a preset (no arguments: the toy preset)",
                       description="Run cells into a run directory. With no arguments runs the "
                       f"'{DEFAULT_PRESET}' preset. Rows already stored are skipped, so re-running into "
                       "the same --out (or --resume) continues where a run stopped.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sweep", metavar="FILE", help="sweep TOML file")
    src.add_argument("--preset", metavar="NAME", help="a sweep shipped in harness/presets (see `pdbench list`)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue the run stored in RUN_DIR")
    cell = p.add_argument_group("single cell (or overrides for every cell of a sweep/preset)")
    cell.add_argument("--model", help="HF id, local dir, .gguf path or alias (pdbench-toy, smollm2, tiny-random-qwen2)")
    cell.add_argument("--decoder", help="decoder name (see `pdbench list`)")
    cell.add_argument("-p", "--param", action="append", type=parse_param, default=[], metavar="NAME=VALUE",
                      help="decoder parameter, repeatable (e.g. -p block_size=4 -p threshold=0.9)")
    cell.add_argument("--suite", help="suite name (see `pdbench list`)")
    cell.add_argument("--limit", type=int, help="first N samples of the suite")
    cell.add_argument("--batch-size", type=int)
    cell.add_argument("--max-new-tokens", type=int)
    cell.add_argument("--repeats", type=int)
    cell.add_argument("--seed", type=int)
    cell.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    cell.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    cell.add_argument("--add-mask-token", action="store_true", help="add a mask token if the model has none")
    cell.add_argument("--family", help=FAMILY_HELP)
    p.add_argument("--data-dir", help="suite data folder (default: $PDBENCH_DATA)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: results/<time>-<name>)")
    p.add_argument("--allow-code-exec", action="store_true", help="let code suites execute generated programs")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up batch per cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="do not write report/plots at the end")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--threads", type=int, help="torch CPU threads (on a busy machine 1 can be many times faster)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdbench", description="Benchmark and ablate parallel LLM decoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub)
    for name, what in (("report", "write summary.parquet and report.md for RUN_DIR"),
                       ("plot", "write PNG and SVG plots under RUN_DIR/plots")):
        sp = sub.add_parser(name, help=what, description=what)
        sp.add_argument("run_dir", metavar="RUN_DIR")
    ls = sub.add_parser("list", help="decoders (parameters, defaults), suites, presets",
                        description="List decoders with their parameters and defaults, suites and presets.")
    ls.add_argument("what", nargs="?", choices=("decoders", "suites", "presets"), help="only this kind")
    v = sub.add_parser("verify", help="check DESIGN.md's invariants on a model",
                       description="Cache vs no-cache, SSD lossless, AR vs HF generate, batch invariance and "
                       "bookkeeping on MODEL; prints PASS/FAIL with the first diverging position.")
    v.add_argument("model", metavar="MODEL")
    v.add_argument("--device")
    v.add_argument("--dtype", default="float32", help="default float32: batch invariance is exact only there")
    v.add_argument("--add-mask-token", action="store_true")
    v.add_argument("--family", help=FAMILY_HELP)
    v.add_argument("--max-new-tokens", type=int, default=32)
    v.add_argument("--block-size", type=int, default=4)
    v.add_argument("--prompt", action="append", help="prompt text, repeatable (default: four built-in prompts)")
    v.add_argument("--decoder", action="append", help="only this decoder, repeatable (default: all)")
    v.add_argument("--threads", type=int, help="torch CPU threads")
    sub.add_parser("bench", help="decoder speed against the bandwidth floor (arguments go to harness.bench)",
                   add_help=False)
    return parser


def _cells_from_args(args) -> tuple[list, str | None, str | None, str]:
    """-> (cells, sweep file, sweep text, readable run name)."""
    from harness import sweep

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    if args.add_mask_token:
        overrides["add_mask_token"] = True
    single = args.decoder or args.suite or args.param
    if args.sweep or args.preset or not single:
        if args.decoder or args.suite or args.param:
            raise SystemExit("pdbench run: --decoder/--suite/-p define a single cell; they cannot be combined "
                             "with --sweep/--preset (edit the sweep file instead)")
        path = Path(args.sweep) if args.sweep else sweep.preset_path(args.preset or DEFAULT_PRESET)
        text = path.read_text()
        return sweep.parse_sweep(text, str(path), overrides), str(path), text, path.stem
    missing = [f"--{k}" for k in ("model", "decoder", "suite") if not getattr(args, k)]
    if missing:
        raise SystemExit(f"pdbench run: a single cell needs {', '.join(missing)} (or use --sweep/--preset)")
    text = sweep.single_cell_toml({**overrides, "decoder": args.decoder, "suite": args.suite},
                                  dict(args.param))
    return sweep.parse_sweep(text, "<command line>"), None, text, f"{args.decoder}-{args.suite}"


def cmd_run(args) -> int:
    from harness import runner, sweep

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in (*OVERRIDES, "decoder", "suite", "param", "add_mask_token")
                 if getattr(args, k, None)]
        if given:  # the stored cells define the run; changing them is a new sweep, not a resume
            print(f"pdbench run: --resume re-runs the stored cells; drop {', '.join(given)} "
                  "(or run the changed sweep with --out RUN_DIR)", file=sys.stderr)
            return 2
        run_dir = Path(args.resume)
        try:
            cells = runner.load_cells(run_dir)
        except FileNotFoundError as e:
            print(f"pdbench run: {e}", file=sys.stderr)
            return 2
        sweep_file, saved = None, run_dir / "sweep.toml"
        text = saved.read_text() if saved.exists() else None
    else:
        try:
            cells, sweep_file, text, name = _cells_from_args(args)
        except (sweep.SweepError, KeyError) as e:
            print(f"pdbench run: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            return 2
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("results") / f"{stamp}-{name}"
    if args.dry_run:
        for c in cells:
            print(f"{c.name}  ({c.model}, {c.decoder} {c.decoder_params()}, {c.suite}, limit={c.limit}, "
                  f"bs={c.batch_size}, repeats={c.repeats})")
        print(f"{len(cells)} cells -> {run_dir}")
        return 0
    opts = runner.RunOptions(data_dir=args.data_dir or os.environ.get("PDBENCH_DATA"),
                             allow_code_exec=args.allow_code_exec, warmup=not args.no_warmup,
                             progress=not args.no_progress)
    print(f"pdbench: {len(cells)} cells -> {run_dir}", file=sys.stderr)
    try:
        result = runner.run(cells, run_dir, opts, argv=["pdbench", *sys.argv[1:]], sweep_file=sweep_file,
                            sweep_text=text)
    except runner.RunConfigError as e:
        print(f"pdbench run: {e}", file=sys.stderr)
        return 2
    print(f"pdbench: {result.rows_written} rows written, {result.rows_skipped} already stored, "
          f"{len(result.failures)} failed cells{' (interrupted)' if result.interrupted else ''}", file=sys.stderr)
    if not args.no_report:
        finish(run_dir)
    if result.interrupted:
        return 130
    return 1 if result.failures else 0


def finish(run_dir: Path) -> None:
    """Report, plots and the summary table: the end of every run."""
    from harness import plots, report

    summary, md = report.write_report(run_dir)
    written = plots.write_plots(run_dir)
    print(report.console_table(summary))
    print(f"\nreport: {md}\nplots:  {len(written)} files in {Path(run_dir) / 'plots'}")


def cmd_list(args) -> int:
    from dataclasses import MISSING, fields

    import decoders
    import suites
    from harness import sweep

    if args.what in (None, "decoders"):
        print("decoders:")
        for name in decoders.available():
            cls = decoders.get_class(name)
            ps = ", ".join(f"{f.name}={f.default!r}" for f in fields(cls) if f.default is not MISSING)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"  {name:16} {ps}" + (f"\n  {'':16} {doc}" if doc and not doc.startswith(cls.__name__ + "(") else ""))
    if args.what in (None, "suites"):
        print("suites:")
        for name in suites.available():
            cls = suites.get_class(name)
            flag = "  [executes code: --allow-code-exec]" if getattr(cls, "needs_code_exec", False) else ""
            print(f"  {name:16} version {getattr(cls, 'version', '?')}{flag}")
    if args.what in (None, "presets"):
        print("presets:")
        for name, desc in sweep.available_presets().items():
            print(f"  {name:16} {desc}")
    return 0


def cmd_verify(args) -> int:
    from harness.verify import verify

    ok = verify(args.model, device=args.device, dtype=args.dtype, add_mask_token=args.add_mask_token, family=args.family,
                max_new_tokens=args.max_new_tokens, block_size=args.block_size, prompts=args.prompt,
                decoder_names=args.decoder)
    return 0 if ok else 1


def _short_warning(message, category, filename, lineno, line=None) -> str:
    return f"pdbench: warning: {message}\n"  # one line, no source excerpt: users read these


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _short_warning
    if argv and argv[0] == "bench":  # likewise: harness.bench owns its flags
        from harness.bench import main as bench_main

        bench_main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "threads", None):  # oversubscribed OpenMP threads spin-wait: very slow on shared CPUs
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "report":
        from harness import report

        summary, md = report.write_report(Path(args.run_dir))
        print(report.console_table(summary))
        print(f"\nreport: {md}")
        return 0
    if args.command == "plot":
        from harness import plots

        for path in plots.write_plots(Path(args.run_dir)):
            print(path)
        return 0
    if args.command == "list":
        return cmd_list(args)
    if args.command == "verify":
        return cmd_verify(args)
    parser.error(f"unknown command {args.command!r}")
    return 2
