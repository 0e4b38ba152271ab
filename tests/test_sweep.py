"""Sweep files: grids, zips, names, and one test per kind of malformed file (named by key path)."""

import pytest

from harness.cells import Cell, cell_hash
from harness.sweep import SweepError, available_presets, load_sweep, parse_sweep, presets_dir

pytestmark = pytest.mark.usefixtures("fake_suites")

BASE = """\
[defaults]
model = "tiny-random-qwen2"
suite = "test-echo"
"""


def test_grid_and_zip_expand_with_readable_names():
    text = BASE + """
[[sweep]]
decoder = "ar"
batch_size = [1, 2]

[[sweep]]
decoder = "block-diffusion"
name = "bd-D{block_size}-s{max_steps_per_block}-t{threshold}"
[sweep.params]
threshold = [0.5, 0.9]
[sweep.zip.params]
block_size = [4, 8]
max_steps_per_block = [2, 3]
"""
    cells = parse_sweep(text, "s.toml").cells
    assert [c.name for c in cells[:2]] == ["tiny-random-qwen2/test-echo/ar/bs1", "tiny-random-qwen2/test-echo/ar/bs2"]
    bd = [(c.params["threshold"], c.params["block_size"], c.params["max_steps_per_block"]) for c in cells[2:]]
    assert sorted(bd) == [(0.5, 4, 2), (0.5, 8, 3), (0.9, 4, 2), (0.9, 8, 3)]  # zipped, not crossed
    assert "bd-D8-s3-t0.9" in {c.name for c in cells}


def test_command_line_overrides_beat_the_file():
    cells = parse_sweep(BASE + '[[sweep]]\ndecoder = "ar"\nbatch_size = 4\n', "s.toml", {"batch_size": 1, "limit": 2}).cells
    assert (cells[0].batch_size, cells[0].limit) == (1, 2)
    zipped = BASE + '[[sweep]]\ndecoder = "ar"\nname = "ar-{max_new_tokens}"\n[sweep.zip]\nmax_new_tokens = [8, 16]\n'
    cells = parse_sweep(zipped, "s.toml", {"batch_size": 1}).cells
    assert [c.batch_size for c in cells] == [1, 1]
    zipped_bs = zipped.replace("max_new_tokens = [8, 16]", "max_new_tokens = [8, 16]\nbatch_size = [2, 4]")
    assert [c.batch_size for c in parse_sweep(zipped_bs, "s.toml", {"batch_size": 1}).cells] == [1, 1]  # flags win


def test_overrides_of_a_sweep_file_are_checked_and_named_by_their_flag():
    with pytest.raises(SweepError) as err:
        parse_sweep(BASE + '[[sweep]]\ndecoder = "ar"\n', "s.toml", {"batch_size": 0, "limit": -3, "dtype": "bogus"})
    msg = str(err.value)
    assert "--batch-size: 'batch_size' must be an int >= 1, got 0" in msg and "--limit: 'limit' must be" in msg
    assert "--dtype: 'dtype' must be one of" in msg


def test_two_cells_that_measure_the_same_thing_are_refused_before_any_model_loads(tmp_path):
    """Different names, same measurement: both would store rows under one cell hash."""
    from harness import runner

    body = ('[[sweep]]\ndecoder = "sdlm-conf"\nname = "a"\nparams = { block_size = 4 }\n'
            '[[sweep]]\ndecoder = "sdlm-conf"\nname = "b"\nlimit = 1\n')
    cells = parse_sweep(BASE + body, "dup.toml").cells
    with pytest.raises(runner.RunConfigError, match="dup.toml: \\[\\[sweep\\]\\] #2: cell 'b' measures what cell 'a'"):
        runner.run(cells, tmp_path / "r", runner.RunOptions(progress=False), loader=None)
    assert not (tmp_path / "r").exists()


MALFORMED = [
    # (sweep body appended to BASE, where the error points, words the message must contain)
    ('[[sweep]]\ndecoder = "ar"\nbatch_sise = 2\n', "[[sweep]] #1 batch_sise",
     ["unknown key 'batch_sise'", "did you mean 'batch_size'"]),
    ('[[sweep]]\ndecoder = "ar"\nbatch_size = "2"\n', "[[sweep]] #1 batch_size", ["'batch_size' must be an int >= 1", "str"]),
    ('[[sweep]]\ndecoder = "ar"\nbatch_size = 0\n', "[[sweep]] #1 batch_size", ["'batch_size' must be an int >= 1, got 0"]),
    ('[[sweep]]\ndecoder = "sdlm-cnf"\n', "[[sweep]] #1 decoder", ["unknown decoder 'sdlm-cnf'", "did you mean 'sdlm-conf'"]),
    ('[[sweep]]\ndecoder = "ar"\nsuite = "test-ecko"\n', "[[sweep]] #1 suite",
     ["unknown suite 'test-ecko'", "did you mean 'test-echo'"]),
    ('[[sweep]]\ndecoder = "ar"\n\n[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.params]\nthreshhold = 0.9\n',
     "[[sweep]] #2 params.threshhold", ["no parameter 'threshhold'", "did you mean 'threshold'"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.params]\nblock_size = 2.5\n', "[[sweep]] #1 params.block_size",
     ["'block_size' must be int", "float"]),
    ('[[sweep]]\ndecoder = "ar"\ndtype = "fp8"\n', "[[sweep]] #1 dtype", ["'dtype' must be one of"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.zip.params]\nblock_size = [2, 4]\nthreshold = [0.5]\n',
     "[[sweep]] #1 zip.params.threshold", ["equal lengths"]),
    ('[[sweep]]\nmodel = "x"\n', "[[sweep]] #1:", ["missing required key 'decoder'"]),
    ('[[sweep]]\ndecoder = "ar"\nlimit = 3\nlimit = 4\n', "TOML syntax error", ["line 7"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\nname = "conf"\nparams = { threshold = [0.5, 0.9] }\n', "[[sweep]] #1 name",
     ["'conf' is not unique"]),
    ('[[sweep]]\ndecoder = "ar"\n[[swep]]\ndecoder = "ar"\n', "top-level key 'swep'", ["unknown key 'swep'"]),
    ('[run]\ninterleave = "yes"\n[[sweep]]\ndecoder = "ar"\n', "[run] interleave", ["true or false"]),
    ('[run]\nthreads = 0\n[[sweep]]\ndecoder = "ar"\n', "[run] threads", ['"auto" or an int >= 1']),
    ('[run]\ntiming_repeats = 2\n[[sweep]]\ndecoder = "ar"\n', "[run] timing_repeats", ["an odd int >= 1"]),
]


@pytest.mark.parametrize("body,where,words", MALFORMED, ids=[m[1] + ":" + m[2][0][:20] for m in MALFORMED])
def test_malformed_sweep_names_the_key(body, where, words):
    with pytest.raises(SweepError) as err:
        parse_sweep(BASE + body, "bad.toml")
    msg = str(err.value)
    assert msg.startswith("bad.toml: invalid sweep:") and where in msg, msg
    for w in words:
        assert w in msg, msg


def test_bad_parameter_values_are_found_once_before_any_model_loads(tmp_path):
    """Values are checked when the runner builds each decoder (once), and named by key path."""
    from harness import runner

    body = '[[sweep]]\ndecoder = "sdlm-conf"\nparams = { block_size = 4, threshold = [0.5, 1.5] }\n'
    cells = parse_sweep(BASE + body, "bad.toml").cells
    with pytest.raises(runner.RunConfigError) as err:
        runner.run(cells, tmp_path / "r", runner.RunOptions(progress=False), loader=None)
    msg = str(err.value)
    assert "bad.toml: [[sweep]] #1 params.threshold:" in msg and "threshold=1.5" in msg and "[0, 1]" in msg
    assert "threshold=0.5" not in msg and not (tmp_path / "r").exists()


def test_all_errors_reported_at_once():
    body = '[[sweep]]\ndecoder = "nope"\nbatch_size = -1\nrepeats = true\n'
    with pytest.raises(SweepError) as err:
        parse_sweep(BASE + body, "bad.toml")
    assert len(err.value.errors) == 3, err.value.errors


def test_single_cell_flag_errors_name_the_flag():
    from harness.sweep import COMMAND_LINE, single_cell_toml

    text = single_cell_toml({"model": "m", "decoder": "sdlm-conf", "suite": "test-echo", "batch_size": 0},
                            {"treshold": 0.5})
    with pytest.raises(SweepError) as err:
        parse_sweep(text, COMMAND_LINE)
    msg = str(err.value)
    assert "invalid sweep" not in msg and "--batch-size: 'batch_size' must be an int >= 1, got 0" in msg
    assert "-p treshold: decoder 'sdlm-conf' has no parameter 'treshold'" in msg


def test_run_table_is_returned():
    swept = parse_sweep('[run]\ninterleave = false\ntiming_repeats = 3\nthreads = "auto"\n' + BASE +
                        '[[sweep]]\ndecoder = "ar"\n', "s.toml")
    assert swept.run == {"interleave": False, "timing_repeats": 3, "threads": "auto"} and len(swept.cells) == 1


def test_cell_hash_tracks_outputs_not_bookkeeping():
    import decoders
    from tests.fakes import EchoSuite

    desc = {"model": "m", "dtype": "float32", "device": "cpu", "n_params": 10}
    suite = EchoSuite()

    def h(**kw):
        c = Cell(**{"model": "m", "decoder": "sdlm-conf", "suite": "test-echo", **kw})
        return cell_hash(c, decoders.get(c.decoder, **c.decoder_params()), suite, desc)

    base = h()
    assert h(limit=3, repeats=5, name="other") == base  # only choose which rows exist
    assert h(params={"threshold": 0.5}) != base
    assert h(params={"threshold": 0.98}) == base  # the default spelled out: same decoder, same hash
    assert h(batch_size=2) != base and h(max_new_tokens=7) != base and h(seed=1) != base


def test_shipped_presets_are_valid():
    names = available_presets()
    assert "smoke" in names
    import suites

    for path in sorted(presets_dir().glob("*.toml")):
        try:
            cells = load_sweep(path).cells
        except SweepError as e:  # a preset on a suite that has not landed yet is not this test's business
            if all("unknown suite" in x for x in e.errors) and not set(suites.available()) >= {"arith", "toy-code"}:
                continue
            raise
        assert cells, path


def test_weights_and_chat_template_enter_the_hash():
    import torch

    from harness.cells import describe_for_hash
    from harness.models import load_model

    adapter = load_model("tiny-random-qwen2", device="cpu", dtype="float32")
    before = describe_for_hash(adapter)
    assert before["chat_template_sha"] and before == describe_for_hash(adapter)
    with torch.no_grad():  # a "retrained" checkpoint under the same name
        adapter.hf_model.lm_head.weight[0, 0] += 1.0
    assert describe_for_hash(adapter)["weights"] != before["weights"]
    adapter.tokenizer.chat_template = "{{ messages[0]['content'] }}"
    assert describe_for_hash(adapter)["chat_template_sha"] != before["chat_template_sha"]


def test_cell_hash_covers_the_code_that_can_change_rows(monkeypatch):
    import suites
    from decoders.sdlm import SDLMConfidence
    from harness import cells
    from tests.conftest import REPO

    gsm8k = suites.get_class("gsm8k")
    files = {p.relative_to(REPO).as_posix() for p in cells.code_files(SDLMConfidence, gsm8k)}
    assert {"decoders/batch.py", "decoders/sampling.py", "decoders/static.py", "decoders/base.py", "decoders/sdlm.py",
            "harness/models.py", "harness/adapter.py", "harness/slot_cache.py", "harness/runner.py", "harness/rows.py", "suites/gsm8k.py",
            "suites/answers.py", "suites/prompts.py", "pdbench_registry.py"} <= files
    # other strategies' and suites' own modules, and code that only reads the store, do not count
    assert not {"decoders/block_diffusion.py", "decoders/ar.py", "suites/mbpp.py", "harness/report.py",
                "harness/plots.py", "harness/cli.py"} & files
    before = cells.code_digest(SDLMConfidence, gsm8k)
    real = cells.Path.read_bytes
    edited = REPO / "decoders" / "sampling.py"
    monkeypatch.setattr(cells.Path, "read_bytes", lambda p: real(p) + (b"# edit" if p == edited else b""))
    cells.code_digest.cache_clear()
    assert cells.code_digest(SDLMConfidence, gsm8k) != before
    cells.code_digest.cache_clear()
