"""What a user installs: the wheel holds the three packages, the shipped checkpoints with their model
cards and the presets, and no training code or logs (those live in toy/, which is not installed)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_has_no_training_code_or_logs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("pdbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"harness", "decoders", "suites", "pdbench_registry.py", *{t for t in tops if t.endswith(".dist-info")}}
    assert not [n for n in names if n.startswith("toy/") or "train" in n.split("/")[-1] or n.endswith(".jsonl")]
    cards = [n for n in names if n.startswith("harness/checkpoints/") and n.endswith("/README.md")]
    weights = [n for n in names if n.startswith("harness/checkpoints/") and n.endswith("model.safetensors")]
    assert cards and len(cards) == len(weights)  # every shipped checkpoint has its model card
    assert "harness/presets/toy.toml" in names
