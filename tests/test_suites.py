"""Suite registry, data loading and validation, prompts and rendering, the code-exec gate, and fast
gold checks (GSM8K in full; subsets of the others; the full sets are in test_suites_gold.py)."""

from __future__ import annotations

import gzip
import json
import re
import string

import pytest

import suites
from suites import CodeExecNotAllowed
from suites.data import DataError
from suites.prompts import SYSTEM_PROMPT
from tests.conftest import SAMPLE_DATA

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(autouse=True)
def data_env(data_dir):
    """The full data sets ($PDBENCH_DATA; skipped without), never the hub."""
    return data_dir


def char_tokenizer(texts, chat: bool):
    """A character-level fast tokenizer, built offline; ChatML template optional."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) | set("".join(texts)))
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat:
        tok.chat_template = CHATML
    return tok


# ---------------------------------------------------------------- registry


def test_registry_names():
    assert {"gsm8k", "math500", "humaneval", "mbpp"} <= set(suites.available())
    for name in ("gsm8k", "math500", "humaneval", "mbpp"):
        suite = suites.get(name)
        assert suite.name == name and suite.version and re.fullmatch(r"[0-9a-f]{12}", suite.prompt_hash)


def test_unknown_suite_says_did_you_mean():
    with pytest.raises(KeyError, match="did you mean 'gsm8k'"):
        suites.get("gsm8")
    with pytest.raises(KeyError, match="unknown suite 'zzz'.*available: .*humaneval"):
        suites.get("zzz")


# ---------------------------------------------------------------- data


def test_data_dir_argument_and_env_and_file_path(monkeypatch, data_env):
    monkeypatch.delenv("PDBENCH_DATA")
    assert len(list(suites.get("humaneval", data_dir=data_env).samples())) == 164
    assert len(list(suites.get("humaneval", data_dir=data_env / "humaneval.jsonl").samples())) == 164
    monkeypatch.setenv("PDBENCH_DATA", str(data_env))
    assert next(suites.get("humaneval").samples()).meta["origin"].endswith("humaneval.jsonl")


def test_no_data_names_all_three_ways(monkeypatch, tmp_path):
    monkeypatch.delenv("PDBENCH_DATA")
    with pytest.raises(DataError) as err:
        list(suites.get("gsm8k", data_dir=tmp_path).samples())
    message = str(err.value)
    assert "data_dir" in message and "PDBENCH_DATA" in message and "openai/gsm8k" in message
    assert str(tmp_path) in message


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    """A typo in --data-dir must not quietly take the data from $PDBENCH_DATA or the hub."""
    monkeypatch.setenv("PDBENCH_DATA", str(SAMPLE_DATA))
    with pytest.raises(DataError, match=f"--data-dir {tmp_path / 'nope'}: no such file or directory"):
        list(suites.get("gsm8k", data_dir=tmp_path / "nope").samples())


def test_missing_field_names_file_line_and_field(tmp_path):
    good = json.dumps({"question": "1+1?", "answer": "2\n#### 2"})
    (tmp_path / "gsm8k_test.jsonl").write_text(good + "\n" + good + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"gsm8k_test\.jsonl:3: missing field 'answer'"):
        list(suites.get("gsm8k", data_dir=tmp_path).samples())


def test_bad_json_names_file_and_line(tmp_path):
    (tmp_path / "humaneval.jsonl").write_text('{"task_id": "x"\n')
    with pytest.raises(DataError, match=r"humaneval\.jsonl:1: not valid JSON"):
        list(suites.get("humaneval", data_dir=tmp_path).samples())
    (tmp_path / "math500_test.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"math500_test\.jsonl:1: expected a JSON object"):
        list(suites.get("math500", data_dir=tmp_path).samples())


def test_gsm8k_answer_without_hash_is_a_data_error(tmp_path):
    (tmp_path / "gsm8k_test.jsonl").write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(DataError, match="####"):
        list(suites.get("gsm8k", data_dir=tmp_path).samples())


def test_gzipped_original_humaneval_and_full_mbpp_file(tmp_path, data_env):
    lines = (data_env / "humaneval.jsonl").read_text().splitlines()[:3]
    with gzip.open(tmp_path / "HumanEval.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    assert [s.id for s in suites.get("humaneval", data_dir=tmp_path).samples()] == [f"HumanEval/{i}" for i in range(3)]
    # the full mbpp.jsonl also holds few-shot/validation/train tasks: only 11..510 are the test split
    record = json.loads((data_env / "mbpp_test.jsonl").read_text().splitlines()[0])
    rows = [json.dumps({**record, "task_id": t}) for t in (2, 10, 11, 510, 511, 900)]
    (tmp_path / "mbpp.jsonl").write_text("\n".join(rows) + "\n")
    assert [s.id for s in suites.get("mbpp", data_dir=tmp_path).samples()] == ["mbpp/11", "mbpp/510"]


def test_limit_and_seeded_shuffle():
    ids = lambda **kw: [s.id for s in suites.get("gsm8k", **kw).samples()]  # noqa: E731
    assert ids(limit=3) == ["gsm8k/0000", "gsm8k/0001", "gsm8k/0002"]
    shuffled = ids(limit=5, shuffle=True, seed=7)
    assert shuffled == ids(limit=5, shuffle=True, seed=7)
    assert shuffled != ids(limit=5, shuffle=True, seed=8) and shuffled != ids(limit=5)
    assert ids(limit=0) == [] and len(ids()) == 1319


# ---------------------------------------------------------------- prompts


def test_render_with_chat_template():
    suite = suites.get("gsm8k", limit=1)
    sample = next(suite.samples())
    question = sample.messages[-1]["content"]
    assert question.endswith("Please reason step by step, and put your final answer within \\boxed{}.")
    tok = char_tokenizer([question], chat=True)
    ids = suite.render(sample, tok)
    assert all(isinstance(i, int) for i in ids)
    expected = (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert tok.decode(ids) == expected
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # a special token, not 12 characters


def test_render_plain_without_template():
    gsm, humaneval, mbpp = suites.get("gsm8k", limit=1), suites.get("humaneval", limit=1), suites.get("mbpp", limit=1)
    g, h, m = next(gsm.samples()), next(humaneval.samples()), next(mbpp.samples())
    tok = char_tokenizer([g.messages[-1]["content"], h.meta["prompt"], m.messages[-1]["content"]], chat=False)
    assert tok.decode(gsm.render(g, tok)) == g.messages[-1]["content"] + "\n"
    assert SYSTEM_PROMPT not in tok.decode(gsm.render(g, tok))
    assert tok.decode(humaneval.render(h, tok)) == h.meta["prompt"]  # a base model continues the function
    text = tok.decode(mbpp.render(m, tok))
    assert m.meta["code"] not in text and all(t in text for t in m.reference["tests"])


def test_prompt_messages_per_suite():
    h = next(suites.get("humaneval").samples())
    assert h.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "implement the function" in h.messages[1]["content"] and h.meta["prompt"] in h.messages[1]["content"]
    m = next(suites.get("mbpp").samples())
    assert m.meta["function"] == "remove_Occ" and "Your code should pass these tests" in m.messages[1]["content"]
    x = next(suites.get("math500").samples())
    assert "\\boxed{}" in x.messages[1]["content"] and x.reference == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_prompt_hash_tracks_the_template(monkeypatch):
    import suites.gsm8k as gsm8k_module

    before = suites.get("gsm8k").prompt_hash
    assert before == suites.get("gsm8k", limit=3).prompt_hash  # subsetting is not a prompt change
    assert len({suites.get(n).prompt_hash for n in ("gsm8k", "math500", "humaneval", "mbpp")}) == 4
    monkeypatch.setattr(gsm8k_module, "MATH_TEMPLATE", "{problem}\nAnswer:")
    assert suites.get("gsm8k").prompt_hash != before


# ---------------------------------------------------------------- the code-exec gate


def test_code_suites_need_explicit_consent():
    suite = suites.get("humaneval", limit=1)
    sample = next(suite.samples())  # listing and rendering need no consent
    with pytest.raises(CodeExecNotAllowed, match="--allow-code-exec"):
        suite.check_ready()
    with pytest.raises(CodeExecNotAllowed, match="untrusted"):
        suite.grade(sample, sample.meta["canonical_solution"])
    with pytest.raises(CodeExecNotAllowed):
        suites.get("mbpp").grade_many([])
    suites.get("humaneval", allow_code_exec=True).check_ready()
    suites.get("gsm8k").check_ready()  # not a code suite
    assert suites.get("mbpp").needs_code_exec and not suites.get("math500").needs_code_exec


# ---------------------------------------------------------------- gold checks (fast part)


def bump_hash_answer(solution: str, delta: int) -> str:
    head, tail = solution.rsplit("####", 1)
    return f"{head}#### {int(tail.strip().replace(',', '')) + delta}"


def test_gsm8k_gold_all_correct_and_corrupted_wrong():
    suite = suites.get("gsm8k")
    samples = list(suite.samples())
    grades = [suite.grade(s, s.meta["solution"]) for s in samples]
    assert sum(g.correct for g in grades) == len(samples) == 1319
    assert {g.extra["extractor"] for g in grades} == {"hash"} and all(g.status == "ok" for g in grades)
    for delta in (1, -1):
        assert not any(suite.grade(s, bump_hash_answer(s.meta["solution"], delta)).correct for s in samples)
    boxed = suite.grade(samples[0], f"... so the answer is \\boxed{{{samples[0].reference}}}.")
    assert boxed.correct and boxed.extra["extractor"] == "boxed"
    assert suite.grade(samples[0], "I do not know.").status == "no_answer"


def test_math500_gold_subset_and_corruption():
    suite = suites.get("math500", limit=12, shuffle=True, seed=1, verify_workers=1)
    try:
        samples = list(suite.samples())
        grades = suite.grade_many([(s, s.meta["solution"]) for s in samples])
        assert all(g.correct and g.extra["boxed_match"] for g in grades), [(s.id, g) for s, g in zip(samples, grades)]
        others = [samples[(i + 1) % len(samples)].reference for i in range(len(samples))]
        swapped = suite.grade_many([(s, f"The answer is $\\boxed{{{o}}}$.") for s, o in zip(samples, others)])
        assert not any(g.correct for g in swapped)
    finally:
        suite.close()


def return_none(code: str) -> str:
    return re.sub(r"\breturn\b[^\n]*", "return None", code)


def test_humaneval_gold_subset_and_corruption():
    suite = suites.get("humaneval", limit=6, allow_code_exec=True)
    samples = list(suite.samples())
    gold = suite.grade_many([(s, s.meta["canonical_solution"]) for s in samples])
    assert [g.status for g in gold] == ["pass"] * 6
    assert all(g.extra["code_source"] == "raw" and "check" not in g.extracted for g in gold)
    broken = suite.grade_many([(s, "    return None\n") for s in samples])
    assert [g.status for g in broken] == ["fail"] * 6
    # HumanEval/0 compares a distance with `<`; flip it
    wrong_op = samples[0].meta["canonical_solution"].replace("distance < threshold", "distance > threshold")
    assert wrong_op != samples[0].meta["canonical_solution"]
    assert suite.grade(samples[0], wrong_op).status == "fail"


def test_humaneval_chat_style_fenced_answer():
    suite = suites.get("humaneval", limit=1, allow_code_exec=True)
    sample = next(suite.samples())
    full = sample.meta["prompt"] + sample.meta["canonical_solution"]
    body = full.split("from typing import List", 1)[1]  # the model restates the function, no imports
    completion = f"Here is the function:\n```python\n{body}\n```\nIt checks every pair."
    grade = suite.grade(sample, completion)
    assert grade.status == "pass" and grade.extra["code_source"] == "fenced"


def test_mbpp_gold_subset_and_corruption():
    suite = suites.get("mbpp", limit=6, allow_code_exec=True)
    samples = list(suite.samples())
    gold = suite.grade_many([(s, s.meta["code"]) for s in samples])
    assert [g.status for g in gold] == ["pass"] * 6
    broken = suite.grade_many([(s, return_none(s.meta["code"])) for s in samples])
    assert [g.status for g in broken] == ["fail"] * 6
    fenced = suite.grade(samples[0], f"Sure.\n```python\n{samples[0].meta['code']}\n```\n")
    assert fenced.status == "pass" and fenced.extra["code_source"] == "fenced"
