"""README's "add a decoder" example registers and runs as written."""

from __future__ import annotations

import re
import sys
import types

import pytest

import decoders
from tests.conftest import REPO


def readme_decoder_source() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Add a decoder", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_example_is_short_and_registers(tiny_qwen2, prompts):
    source = readme_decoder_source()
    assert len(source.strip().splitlines()) <= 40
    module = types.ModuleType("readme_example")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, "README.md", "exec"), module.__dict__)
        assert "sdlm-fixed-k" in decoders.available()
        check_example(tiny_qwen2, prompts)
    finally:  # the example's registration does not outlive the test
        decoders.unregister("sdlm-fixed-k")
        del sys.modules[module.__name__]


def check_example(tiny_qwen2, prompts):
    with pytest.raises(ValueError, match="k=5"):
        decoders.get("sdlm-fixed-k", k=5)
    for k, threshold in ((4, 0.0), (1, 1.0)):  # k = D is threshold 0, k = 1 is first-token-only
        mine = decoders.get("sdlm-fixed-k", k=k).generate(tiny_qwen2, prompts, 15)
        conf = decoders.get("sdlm-conf", threshold=threshold).generate(tiny_qwen2, prompts, 15)
        assert [r.tokens for r in mine] == [r.tokens for r in conf]
        for r in mine:
            r.check_bookkeeping()
        static = decoders.get("sdlm-fixed-k", k=k, engine="static").generate(tiny_qwen2, prompts, 15)
        assert [r.tokens for r in static] == [r.tokens for r in mine]
