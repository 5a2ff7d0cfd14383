"""The train and eval commands as a user runs them, torchrun included."""
import json
import sys

import pytest
import torch

from tests.cli_helpers import assert_user_error, run_cli

TINY = ["--data", "digits", "--limit", "256", "--input-size", "16", "--width-mult", "0.35",
        "--batch-size", "32", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    r = run_cli("train", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_eval_prints_accuracy_and_counts(trained):
    r = run_cli("eval", "--checkpoint", trained / "supernet.pt", "--width", "0.5", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(r.stdout)
    assert 0 <= data["top1"] <= 100 and 0 <= data["top5"] <= 100 and data["top5"] >= data["top1"]
    assert data["macs"] > 0


def test_eval_widths_scores_every_uniform_width_and_random_configs(trained, tmp_path):
    r = run_cli("eval", "--checkpoint", trained / "supernet.pt", "--widths", "--random", "2", "--calib-batches",
                "2", "--plot", tmp_path / "w.png", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    prof = json.loads(r.stdout)
    kinds = [row["kind"] for row in prof["rows"]]
    assert kinds.count("around") == kinds.count("per-unit") == 2
    uniform = [row for row in prof["rows"] if row["kind"] == "uniform"]
    assert uniform[0]["name"] == "0.15x" and uniform[-1]["name"] == "1.50x"
    assert [u["macs"] for u in uniform] == sorted(u["macs"] for u in uniform)  # narrow to wide
    # the largest fall, by its definition: the largest drop from any narrower width to a wider one
    top = [u["top1"] for u in uniform]
    want = max([0.0] + [top[i] - top[j] for i in range(len(top)) for j in range(i + 1, len(top))])
    assert prof["largest_fall"] == pytest.approx(want)
    assert (tmp_path / "w.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrain_searched_arch_from_scratch(trained, tmp_path):
    from autoslim_hw.models import create_model

    net = create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16, num_classes=10, in_chans=1)
    arch = tmp_path / "arch.json"
    arch.write_text(net.space.uniform(0.5, snap=True).to_json())
    out = tmp_path / "retrain"
    r = run_cli("train", *TINY, "--arch", arch, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = torch.load(out / "supernet.pt", weights_only=True)
    assert ckpt["kind"] == "subnet" and ckpt["config"] == dict(net.space.uniform(0.5, snap=True))
    assert "val_top1" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    r = run_cli("eval", "--checkpoint", out / "supernet.pt", "--json")
    assert r.returncode == 0, r.stderr[-2000:]


def test_torchrun_two_ranks_same_weights_different_configs(tmp_path):
    import subprocess

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "autoslim_hw", "train", *TINY, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["ranks_in_sync"] is True
    assert last["distinct_rank_configs"] is True


def test_train_and_eval_bad_input(trained, tmp_path):
    assert_user_error(run_cli("train", *TINY, "--out", trained), "already holds a run", "--resume")
    assert_user_error(run_cli("train", *TINY, "--out", tmp_path / "none", "--resume"), "no checkpoint")
    assert_user_error(run_cli("train", "--data", "mnist", "--out", tmp_path / "x"), "unknown dataset 'mnist'")
    assert_user_error(run_cli("train", "--data", "cifar10", "--data-dir", tmp_path, "--out", tmp_path / "y"),
                      "CIFAR-10 not found")
    assert not (tmp_path / "x" / "supernet.pt").exists()
    assert_user_error(run_cli("demo", "--data", "nope", "--out", tmp_path / "demo"), "unknown dataset 'nope'")
    assert not (tmp_path / "demo").exists()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    assert_user_error(run_cli("eval", "--checkpoint", corrupt, "--width", "1.0"), "not a readable autoslim-hw checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    assert_user_error(run_cli("eval", "--checkpoint", foreign), "not an autoslim-hw checkpoint")
    assert_user_error(run_cli("eval", "--checkpoint", tmp_path / "nope.pt"), "does not exist")
