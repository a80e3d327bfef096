"""examples/train_digits.py: interrupted + resumed in fresh processes == uninterrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("optax")

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "train_digits.py")


def run(*args):
    res = subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_resume_in_a_fresh_process_reaches_the_same_parameters(tmp_path):
    data, ck = str(tmp_path / "digits"), str(tmp_path / "ck")
    common = ["--data", data, "--epochs", "2", "--shards", "3"]
    full_out = run(*common, "--save-params", str(tmp_path / "full.npz"))
    losses = [float(line.rsplit(" ", 1)[1]) for line in full_out.splitlines() if "mean loss" in line]
    assert len(losses) == 2 and losses[1] < losses[0]  # it learns

    # 28 full batches of 64 per epoch: step 40 is in the middle of epoch 1.
    run(*common, "--stop-after", "40", "--checkpoint", ck)
    with open(ck + ".json") as f:
        state = json.load(f)
    assert state["step"] == 40 and state["pipeline"]["source"]["epoch"] == 1
    assert 0 < state["pipeline"]["source"]["position"] < 1797
    assert len(json.dumps(state["pipeline"])) < 500

    resumed_out = run(*common, "--resume", ck, "--save-params", str(tmp_path / "resumed.npz"))
    assert "resumed at step 40" in resumed_out
    with np.load(tmp_path / "full.npz") as full, np.load(tmp_path / "resumed.npz") as resumed:
        assert sorted(full.files) == sorted(resumed.files) and full.files
        for name in full.files:
            np.testing.assert_array_equal(full[name], resumed[name], err_msg=name)
