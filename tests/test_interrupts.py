"""Ctrl-C in the middle of long commands: exit code 130, a one-line message, files that are
whole (written atomically), and a `--resume` that completes the job."""
import os
import signal
import subprocess
import sys
import time

from autoslim_hw.lookup_tables import LatencyTable
from autoslim_hw.models import create_model
from tests.cli_helpers import start_cli


def _interrupt_when(cmd, ready, cwd, timeout=300):
    """Start the CLI, send SIGINT once ready() is true, return the finished process."""
    proc = start_cli(*cmd, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_ctrl_c_during_profile_then_resume(tmp_path):
    out = tmp_path / "lut.json"
    cmd = ["profile", "--model", "mobilenet_v2_cifar", "--input-size", "8", "--runs", "2", "--rounds", "1", "--passes", "1",
           "--calibration", "0", "--out", out]
    code, _, err = _interrupt_when(cmd, out.exists, tmp_path)  # the first save comes after 25 entries
    assert code == 130 and "Traceback" not in err and "interrupted" in err
    partial = LatencyTable.load(out)  # a whole table, not half a file
    assert [p.name for p in tmp_path.iterdir()] == ["lut.json"]  # no temp files left behind
    net = create_model("mobilenet_v2_cifar", input_size=8)
    have, total = partial.coverage(net)
    assert 25 <= have < total
    r = subprocess.run([sys.executable, "-m", "autoslim_hw", *map(str, cmd), "--resume"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = LatencyTable.load(out)
    assert resumed.coverage(net) == (total, total)
    assert all(resumed.entries[k] == v for k, v in partial.entries.items())  # kept, not measured again


def test_ctrl_c_during_train_then_resume(tmp_path):
    import json

    import torch

    run = tmp_path / "run"
    cmd = ["train", "--data", "digits", "--input-size", "8", "--width-mult", "0.35", "--limit", "640",
           "--batch-size", "32", "--epochs", "2", "--num-random", "1", "--save-every", "4", "--out", run]
    code, _, err = _interrupt_when(cmd, (run / "supernet.pt").exists, tmp_path)  # the first save: step 4 of 18
    assert code == 130 and "Traceback" not in err and "--resume" in err
    saved = torch.load(run / "supernet.pt", weights_only=False)  # a whole checkpoint, not half a file
    assert saved["step"] < 36
    assert not [p.name for p in run.iterdir() if "tmp" in p.name]  # no temp files left behind
    r = subprocess.run([sys.executable, "-m", "autoslim_hw", *map(str, cmd), "--resume"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert epochs == [1, 2]  # each epoch once: the resumed run did not repeat the first
