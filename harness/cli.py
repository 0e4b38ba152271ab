"""The `pdbench` command: run, report, plot, list, verify, bench.

`pdbench run` with no arguments runs the `toy` preset. Every run ends by writing report.md, the
plots and printing the summary table, so one command gives the whole answer.
"""

from __future__ import annotations

import argparse
import os
import shlex
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


def parse_threads(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads {text!r}: accepted: auto, or an int >= 1")
    return n


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _run_parser(sub) -> None:
    from harness.cells import Cell

    cell_default = Cell("m", "d", "s")
    p = sub.add_parser("run", help="run one cell, a sweep file or a preset (no arguments: the toy preset)",
                       description="Run cells into a run directory. With no arguments runs the "
                       f"'{DEFAULT_PRESET}' preset. Rows already stored are skipped, so re-running into "
                       "the same --out (or --resume) continues where a run stopped. Defaults shown are a "
                       "single cell's; with --sweep/--preset the file's values apply unless a flag is given.")
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
    cell.add_argument("--limit", type=int, help="first N samples of the suite (default: all)")
    cell.add_argument("--batch-size", type=int, help=f"prompts per batch (default {cell_default.batch_size})")
    cell.add_argument("--max-new-tokens", type=int, help=f"(default {cell_default.max_new_tokens})")
    cell.add_argument("--repeats", type=int, help=f"(default {cell_default.repeats})")
    cell.add_argument("--seed", type=int, help=f"(default {cell_default.seed})")
    cell.add_argument("--dtype", help="auto, float32, bfloat16, float16 (default auto: bf16 on CUDA, fp32 on CPU)")
    cell.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    cell.add_argument("--add-mask-token", action="store_true", help="add a mask token if the model has none")
    timing = p.add_argument_group("timing (also a sweep's [run] table; flags win)")
    timing.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                        help="run the batches of cells that share model, suite, batch size and max new tokens in turns, so "
                        "machine drift hits them alike (default: on)")
    timing.add_argument("--timing-repeats", type=int, metavar="K",
                        help="time every batch K times (K odd) and keep the median run (default 1)")
    timing.add_argument("--threads", type=parse_threads, metavar="N|auto",
                        help="torch CPU threads (default auto: 1 for small models on few cores, where "
                        "oversubscribed threads spin-wait)")
    cell.add_argument("--family", help=FAMILY_HELP)
    where = p.add_argument_group("where the cells run (also a sweep's [run] table: executor, ray_address, num_gpus, "
                                 "max_retries; flags win)")
    place = where.add_mutually_exclusive_group()
    place.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run the cells as Ray tasks: without ADDRESS a local Ray is started for the run; "
                       "'auto' or ray://host:port joins a running cluster (docs/ray.md)")
    place.add_argument("--local", action="store_true", help='run here even when the sweep says executor = "ray"')
    where.add_argument("--num-gpus", type=float, metavar="N",
                       help="GPUs per Ray task (default: 1 for CUDA cells, 0 for CPU cells)")
    where.add_argument("--max-retries", type=int, metavar="N",
                       help="how often Ray re-runs a task whose worker or node died (default 2)")
    p.add_argument("--data-dir", help="suite data folder (default: $PDBENCH_DATA, then the Hugging Face hub)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: results/<time>-<name>)")
    p.add_argument("--allow-code-exec", action="store_true", help="let code suites execute generated programs")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up batch per cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    p.add_argument("--no-report", action="store_true", help="do not write report/plots at the end")
    p.add_argument("--dry-run", action="store_true", help="check everything, list the cells and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdbench", description="Benchmark and ablate parallel LLM decoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub)
    for name, what in (("report", "write summary.parquet and report.md for RUN_DIR"),
                       ("plot", "write PNG and SVG plots under RUN_DIR/plots")):
        sp = sub.add_parser(name, help=what, description=what)
        sp.add_argument("run_dir", metavar="RUN_DIR")
    ls = sub.add_parser("list", help="decoders (parameters, defaults, allowed values), suites, presets",
                        description="List decoders with their parameters, defaults and allowed values, suites "
                        "with what they need, and presets.")
    ls.add_argument("what", nargs="?", choices=("decoders", "suites", "presets"), help="only this kind")
    v = sub.add_parser("verify", help="check the design invariants on a model",
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
    v.add_argument("--threads", type=parse_threads, help="torch CPU threads")
    sub.add_parser("bench", help="decoder speed against the bandwidth floor (arguments go to harness.bench)",
                   add_help=False)
    return parser


def _sweep_from_args(args):
    """-> (Sweep, sweep file, sweep text, readable run name)."""
    from harness import sweep

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    if args.add_mask_token:
        overrides["add_mask_token"] = True
    single = args.decoder or args.suite or args.param
    if args.sweep or args.preset or not single:
        if single:
            raise sweep.SweepError(["--decoder/--suite/-p define a single cell; they cannot be combined with "
                                    "--sweep/--preset (edit the sweep file instead)"], sweep.COMMAND_LINE)
        path = Path(args.sweep) if args.sweep else sweep.preset_path(args.preset or DEFAULT_PRESET)
        if not path.is_file():
            raise sweep.SweepError([f"--sweep {args.sweep}: no such file"], sweep.COMMAND_LINE)
        text = path.read_text()
        return sweep.parse_sweep(text, str(path), overrides), str(path), text, path.stem
    missing = [f"--{k}" for k in ("model", "decoder", "suite") if not getattr(args, k)]
    if missing:
        raise sweep.SweepError([f"a single cell needs {', '.join(missing)} (or use --sweep/--preset)"],
                               sweep.COMMAND_LINE)
    text = sweep.single_cell_toml({**overrides, "decoder": args.decoder, "suite": args.suite}, dict(args.param))
    return sweep.parse_sweep(text, sweep.COMMAND_LINE), None, text, f"{args.decoder}-{args.suite}"


def run_options(args, settings: dict):
    """The sweep's [run] table, overridden by flags."""
    from harness import runner

    def pick(flag, key, default):
        value = getattr(args, flag)
        return value if value is not None else settings.get(key, default)

    executor = "ray" if args.ray is not None else "local" if args.local else settings.get("executor", "local")
    return runner.RunOptions(data_dir=args.data_dir or os.environ.get("PDBENCH_DATA"),
                             allow_code_exec=args.allow_code_exec, warmup=not args.no_warmup,
                             progress=not args.no_progress, interleave=pick("interleave", "interleave", True),
                             timing_repeats=pick("timing_repeats", "timing_repeats", 1),
                             threads=pick("threads", "threads", "auto"), executor=executor,
                             ray_address=args.ray or settings.get("ray_address", ""),  # bare --ray: the sweep's
                             num_gpus=pick("num_gpus", "num_gpus", None),
                             max_retries=pick("max_retries", "max_retries", 2))


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
        settings = runner.load_settings(run_dir)
    else:
        try:
            parsed, sweep_file, text, name = _sweep_from_args(args)
        except (sweep.SweepError, KeyError) as e:
            print(f"pdbench run: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            return 2
        cells, settings = parsed.cells, parsed.run
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("results") / f"{stamp}-{name}"
    opts = run_options(args, settings)
    if opts.timing_repeats < 1 or opts.timing_repeats % 2 == 0:
        print(f"pdbench run: --timing-repeats {opts.timing_repeats}: accepted: an odd int >= 1 (1, 3, 5, ...), "
              "so that the median is one measured run", file=sys.stderr)
        return 2
    for flag, value in (("--num-gpus", opts.num_gpus), ("--max-retries", opts.max_retries)):
        if value is not None and value < 0:
            print(f"pdbench run: {flag} {value}: accepted: a number >= 0", file=sys.stderr)
            return 2
    if opts.executor == "ray":  # before anything else: no Ray, no run directory
        from harness import distributed

        try:
            distributed.require_ray()
        except runner.RunConfigError as e:
            print(f"pdbench run: {e}", file=sys.stderr)
            return 2
    if args.dry_run:
        try:
            prepared = runner.prepare(cells, opts)
        except runner.RunConfigError as e:
            print(f"pdbench run: {e}", file=sys.stderr)
            return 2
        for c in cells:
            print(f"{c.name}  ({c.model}, {c.decoder} {c.decoder_params()}, {c.suite}, limit={c.limit}, "
                  f"bs={c.batch_size}, repeats={c.repeats})")
        on = ""
        if opts.executor == "ray":
            from harness.distributed import task_groups

            on = f" as {plural(len(task_groups(prepared)), 'Ray task')} ({opts.ray_address or 'a local Ray'})"
        print(f"{plural(len(cells), 'cell')}{on} -> {run_dir}")
        return 0
    on = f" on Ray ({opts.ray_address or 'a local Ray'})" if opts.executor == "ray" else ""
    print(f"pdbench: {plural(len(cells), 'cell')}{on} -> {run_dir}", file=sys.stderr)
    try:
        result = runner.run(cells, run_dir, opts, argv=["pdbench", *sys.argv[1:]], sweep_file=sweep_file,
                            sweep_text=text)
    except runner.RunConfigError as e:
        print(f"pdbench run: {e}", file=sys.stderr)
        return 2
    print(f"pdbench: {plural(result.rows_written, 'row')} written, {result.rows_skipped} already stored, "
          f"{plural(len(result.failures), 'failed cell')}{' (interrupted)' if result.interrupted else ''}",
          file=sys.stderr)
    if not args.no_report:
        finish(run_dir)
    if result.interrupted:
        print(f"pdbench: the run is incomplete; continue it with: pdbench run --resume {shlex.quote(str(run_dir))}",
              file=sys.stderr)
        return 130
    return 1 if result.failures else 0


def finish(run_dir: Path) -> None:
    """Report, plots and the summary table: the end of every run."""
    from harness import plots, report

    summary, md = report.write_report(run_dir)
    written = plots.write_plots(run_dir)
    print(report.console_table(summary))
    for line in report.warnings(run_dir, summary):
        print(f"pdbench: {line}", file=sys.stderr)
    print(f"\nreport: {md}\nplots:  {plural(len(written), 'file')} in {Path(run_dir) / 'plots'}")


def cmd_list(args) -> int:
    from dataclasses import MISSING, fields

    import decoders
    import suites
    from harness import sweep

    if args.what in (None, "decoders"):
        def describe(cls, names) -> list[str]:
            allowed = cls.allowed_values()
            return [f"      {f.name}={f.default!r}" + (f": {allowed[f.name]}" if allowed.get(f.name) else "")
                    for f in fields(cls) if f.name in names and f.default is not MISSING]

        common = [f.name for f in fields(decoders.Decoder)]
        print("decoders (parameter=default: allowed values); every decoder also takes:")
        print("\n".join(describe(decoders.Decoder, common)))
        for name in decoders.available():
            cls = decoders.get_class(name)
            print(f"  {name}" + (f"  -- {cls.source}" if getattr(cls, "source", "") else ""))
            print("\n".join(describe(cls, [f.name for f in fields(cls) if f.name not in common])) or "      (no own parameters)")
    if args.what in (None, "suites"):
        print("suites:")
        for name in suites.available():
            cls = suites.get_class(name)
            spec = getattr(cls, "data_spec", None)
            needs = [n for n in (f"data: {spec.filenames[0]} in --data-dir / $PDBENCH_DATA, or the hub's {spec.hub_id}"
                                 if spec else "",
                                 "executes code: --allow-code-exec" if getattr(cls, "needs_code_exec", False) else "")
                     if n]
            print(f"  {name:16} version {getattr(cls, 'version', '?')}" + (f"  [{'; '.join(needs)}]" if needs else ""))
    if args.what in (None, "presets"):
        print("presets:")
        for name, desc in sweep.available_presets().items():
            print(f"  {name:16} {desc}")
    return 0


def cmd_verify(args) -> int:
    from harness.verify import verify

    try:
        ok = verify(args.model, device=args.device, dtype=args.dtype, add_mask_token=args.add_mask_token,
                    family=args.family, max_new_tokens=args.max_new_tokens, block_size=args.block_size,
                    prompts=args.prompt, decoder_names=args.decoder)
    except ValueError as e:  # a bad argument (before the model loads, but for --prompt on a tokenizer-less model)
        print(f"pdbench verify: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


def _short_warning(message, category, filename, lineno, line=None) -> str:
    return f"pdbench: warning: {message}\n"  # one line, no source excerpt: users read these


def _check_run_dir(run_dir: Path) -> str | None:
    if not (run_dir / "cells.json").is_file():
        return f"{run_dir} is not a pdbench run directory (no cells.json); give the --out of a `pdbench run`"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _short_warning
    if argv and argv[0] == "bench":  # harness.bench owns its flags
        from harness.bench import main as bench_main

        bench_main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if isinstance(getattr(args, "threads", None), int):
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "run":
        return cmd_run(args)
    if args.command in ("report", "plot"):
        run_dir = Path(args.run_dir)
        problem = _check_run_dir(run_dir)
        if problem:
            print(f"pdbench {args.command}: {problem}", file=sys.stderr)
            return 2
        if args.command == "report":
            from harness import report

            summary, md = report.write_report(run_dir)
            print(report.console_table(summary))
            print(f"\nreport: {md}")
        else:
            from harness import plots

            for path in plots.write_plots(run_dir):
                print(path)
        return 0
    if args.command == "list":
        return cmd_list(args)
    if args.command == "verify":
        return cmd_verify(args)
    parser.error(f"unknown command {args.command!r}")
    return 2
