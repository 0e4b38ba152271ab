"""Sweep files: grids, zips, names, and one test per kind of malformed file (with its line)."""

import pytest

from harness.cells import Cell, cell_hash
from harness.sweep import SweepError, available_presets, load_sweep, parse_sweep, presets_dir
from tests import test_runner_fakes  # noqa: F401  (registers the test suites)

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
    cells = parse_sweep(text, "s.toml")
    assert [c.name for c in cells[:2]] == ["tiny-random-qwen2/test-echo/ar/bs1", "tiny-random-qwen2/test-echo/ar/bs2"]
    bd = [(c.params["threshold"], c.params["block_size"], c.params["max_steps_per_block"]) for c in cells[2:]]
    assert sorted(bd) == [(0.5, 4, 2), (0.5, 8, 3), (0.9, 4, 2), (0.9, 8, 3)]  # zipped, not crossed
    assert "bd-D8-s3-t0.9" in {c.name for c in cells}


def test_command_line_overrides_beat_the_file():
    cells = parse_sweep(BASE + '[[sweep]]\ndecoder = "ar"\nbatch_size = 4\n', "s.toml", {"batch_size": 1, "limit": 2})
    assert (cells[0].batch_size, cells[0].limit) == (1, 2)


MALFORMED = [
    # (sweep body appended to BASE, line of the error, words the message must contain)
    ('[[sweep]]\ndecoder = "ar"\nbatch_sise = 2\n', 6, ["unknown key 'batch_sise'", "did you mean 'batch_size'"]),
    ('[[sweep]]\ndecoder = "ar"\nbatch_size = "2"\n', 6, ["'batch_size' must be an int >= 1", "str"]),
    ('[[sweep]]\ndecoder = "ar"\nbatch_size = 0\n', 6, ["'batch_size' must be an int >= 1, got 0"]),
    ('[[sweep]]\ndecoder = "sdlm-cnf"\n', 5, ["unknown decoder 'sdlm-cnf'", "did you mean 'sdlm-conf'"]),
    ('[[sweep]]\ndecoder = "ar"\nsuite = "test-ecko"\n', 6, ["unknown suite 'test-ecko'", "did you mean 'test-echo'"]),
    ('[[sweep]]\ndecoder = "ar"\n\n[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.params]\nthreshhold = 0.9\n', 10,
     ["[[sweep]] #2", "no parameter 'threshhold'", "did you mean 'threshold'"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\nparams = { block_size = 4, threshold = [0.5, 1.5] }\n', 6,
     ["bad value", "threshold=1.5", "[0, 1]"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.params]\nblock_size = 2.5\n', 7, ["'block_size' must be int", "float"]),
    ('[[sweep]]\ndecoder = "ar"\ndtype = "fp8"\n', 6, ["'dtype' must be one of"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\n[sweep.zip.params]\nblock_size = [2, 4]\nthreshold = [0.5]\n', 8,
     ["equal lengths"]),
    ('[[sweep]]\nmodel = "x"\n', 4, ["missing required key 'decoder'"]),
    ('[[sweep]]\ndecoder = "ar"\nlimit = 3\nlimit = 4\n', 7, ["TOML syntax error", "line 7"]),
    ('[[sweep]]\ndecoder = "sdlm-conf"\nname = "conf"\nparams = { threshold = [0.5, 0.9] }\n', 6,
     ["'conf' is not unique"]),
    ('[[sweep]]\ndecoder = "ar"\n[[swep]]\ndecoder = "ar"\n', 6, ["top level", "unknown key 'swep'"]),
]


@pytest.mark.parametrize("body,line,words", MALFORMED, ids=[m[2][0][:30] for m in MALFORMED])
def test_malformed_sweep_gives_line_precise_error(body, line, words):
    with pytest.raises(SweepError) as err:
        parse_sweep(BASE + body, "bad.toml")
    msg = str(err.value)
    assert f"bad.toml:{line}:" in msg or f"line {line}" in msg, msg
    for w in words:
        assert w in msg, msg


def test_all_errors_reported_at_once():
    body = '[[sweep]]\ndecoder = "nope"\nbatch_size = -1\nrepeats = true\n'
    with pytest.raises(SweepError) as err:
        parse_sweep(BASE + body, "bad.toml")
    assert len(err.value.errors) == 3, err.value.errors


def test_single_cell_flags_are_validated_like_files():
    from harness.sweep import single_cell_toml

    text = single_cell_toml({"model": "m", "decoder": "sdlm-conf", "suite": "test-echo"}, {"block_size": 0})
    with pytest.raises(SweepError, match="block_size=0"):
        parse_sweep(text, "<command line>")


def test_cell_hash_tracks_outputs_not_bookkeeping():
    import decoders
    from tests.test_runner_fakes import EchoSuite

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
            cells = load_sweep(path)
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
