"""The hub path (`datasets`) and the local JSONL path build the same samples from the same records;
offline, the error names the three ways to give data."""

from __future__ import annotations

import pytest

import suites
from suites import data
from tests.conftest import SAMPLE_DATA

FILES = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500_test.jsonl", "humaneval": "humaneval.jsonl",
         "mbpp": "mbpp_test.jsonl"}


@pytest.mark.parametrize("name", list(FILES))
def test_hub_and_jsonl_give_identical_samples(name, monkeypatch):
    import datasets

    calls = []

    def local_hub(spec):  # what load_dataset(hub id) returns, fed from the same records through datasets
        calls.append(spec.hub_id)
        return datasets.load_dataset("json", data_files=str(SAMPLE_DATA / FILES[name]), split="train")

    monkeypatch.delenv("PDBENCH_DATA", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "hub_load", local_hub)
    from_hub = list(suites.get(name).samples())
    from_file = list(suites.get(name, data_dir=SAMPLE_DATA).samples())
    assert calls == [data_spec(name).hub_id]
    assert len(from_hub) == len(from_file) > 0
    for a, b in zip(from_hub, from_file):
        assert (a.id, a.messages, a.reference) == (b.id, b.messages, b.reference)
        assert a.meta["origin"] == f"hf:{data_spec(name).hub_id}" and b.meta["origin"].endswith(FILES[name])


def data_spec(name: str):
    import importlib

    return importlib.import_module(f"suites.{name}").SPEC


def test_offline_error_names_the_three_ways(monkeypatch, tmp_path):
    monkeypatch.delenv("PDBENCH_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataError) as err:
        list(suites.get("gsm8k", data_dir=tmp_path).samples())
    message = str(err.value)
    assert "--data-dir" in message and "PDBENCH_DATA" in message and "openai/gsm8k" in message
    assert "offline" in message and str(tmp_path) in message


def test_unreachable_hub_says_why(monkeypatch):
    def no_network(spec):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("PDBENCH_DATA", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "hub_load", no_network)
    with pytest.raises(data.DataError, match="ConnectionError: Couldn't reach 'openai/gsm8k'"):
        list(suites.get("gsm8k").samples())
