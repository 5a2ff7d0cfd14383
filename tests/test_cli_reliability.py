"""Every command against the mistakes users make: a missing path, a file of the wrong kind,
a corrupt file, a model, table or checkpoint that do not belong together, an impossible
target, a bad number. Each runs the real console script in a subprocess and must end with
exit code 2, one line on stderr naming the problem, no traceback, and no file written."""
import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.cli_helpers import assert_user_error, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real (briefly trained) supernet checkpoint and files of every wrong kind."""
    from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint
    from autoslim_hw.train import TrainSettings, train
    from tests.test_search import synthetic_table

    root = tmp_path_factory.mktemp("reliability")
    settings = TrainSettings(data="digits", model="mobilenet_v2_cifar", model_kwargs={"width_mult": 0.25},
                             input_size=16, groups=2, epochs=1, batch_size=32, limit=64, num_random=0,
                             eval_batches=1)
    train(settings, root / "run", progress=False)
    ckpt = root / "run" / "supernet.pt"
    supernet = model_from_checkpoint(load_checkpoint(ckpt))[0]
    synthetic_table(supernet, root / "lut.json")
    synthetic_table(supernet, root / "other_model_lut.json", keys=["mobilenet_v2_cifar@32-0badc0de"])
    (root / "config.json").write_text(supernet.space.smallest().to_json())
    (root / "other_config.json").write_text(json.dumps({"widths": {"features.99": 8}}))
    (root / "corrupt.pt").write_bytes(b"\x80\x02 not a pickle")
    (root / "corrupt.json").write_text('{"widths": {')
    (root / "truncated.json.gz").write_bytes(gzip.compress(b'{"format": "autoslim-hw/latency-table"')[:20])
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    torch.save({"conv.weight": torch.zeros(2)}, root / "state_dict.pt")
    (root / "a_folder").mkdir()
    (root / "device_zero_threads.json").write_text(json.dumps({"name": "board", "description": "x", "threads": 0}))
    (root / "device_no_name.json").write_text(json.dumps({"description": "a board"}))
    (root / "config_zero_width.json").write_text(json.dumps({"widths": {"features.0.0": 0}}))
    (root / "config_text_width.json").write_text(json.dumps({"widths": {"features.0.0": "16"}}))
    bundle = root / "bundle_escaping"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({
        "format": "autoslim-hw/bundle", "version": 1, "bundle_id": "b", "model": {"arch": "m", "input_size": 8},
        "model_key": "k", "runtime": "litert", "benchmark": {"warmup_runs": 1, "num_runs": 5, "warmup_min_secs": 0,
                                                             "min_secs": 0},
        "models": [{"file": "../../etc/passwd", "key": "k", "sig": {}}]}))
    ckpt_data = torch.load(ckpt, weights_only=True)
    torch.save({**ckpt_data, "kind": "subnet", "config": None}, root / "subnet_without_config.pt")
    torch.save({**ckpt_data, "spec": {**ckpt_data["spec"], "width_max": 1e300}}, root / "huge_width.pt")
    good = json.loads((root / "lut.json").read_text())
    first = next(iter(good["entries"]))
    for name, edit in {"nan": lambda d: d["entries"][first].update(ms=float("nan")),
                       "negative": lambda d: d["entries"][first].update(ms=-0.39),
                       "no_device": lambda d: d["metadata"].pop("device"),
                       "empty": lambda d: d.update(entries={})}.items():
        damaged = json.loads(json.dumps(good))
        edit(damaged)
        (root / f"lut_{name}.json").write_text(json.dumps(damaged))
    return root


# (arguments, fragments the one line must contain). Paths are relative to the fixture folder.
CASES = {
    # --- paths that do not exist ---------------------------------------------------------------
    "eval: missing checkpoint": (["eval", "--checkpoint", "missing.pt"], ["missing.pt", "does not exist"]),
    "export: missing checkpoint": (["export", "--checkpoint", "missing.pt"], ["missing.pt", "does not exist"]),
    "search: missing checkpoint": (["search", "--checkpoint", "missing.pt", "--flops", "1M"], ["does not exist"]),
    "profile: missing checkpoint": (["profile", "--checkpoint", "missing.pt"], ["does not exist"]),
    "lut info: missing table": (["lut", "info", "missing.json"], ["missing.json", "does not exist"]),
    "lut validate: missing table": (["lut", "validate", "missing.json"], ["does not exist"]),
    "lut run-local: missing bundle": (["lut", "run-local", "missing_bundle", "--out", "results"], ["missing_bundle"]),
    "lut import: missing results": (["lut", "import", "missing_results", "--bundle", "missing_bundle", "--device",
                                     "pixel-7", "--out", "t.json"], ["missing_bundle"]),
    "count: missing channel config": (["count", "--model", "mobilenet_v2_cifar", "--channels", "missing.json"],
                                      ["missing.json", "does not exist"]),
    "export: missing config": (["export", "--checkpoint", "run/supernet.pt", "--config", "missing.json"],
                               ["missing.json"]),
    "train: missing --arch": (["train", "--arch", "missing.json", "--out", "new_run"], ["missing.json"]),
    "train: missing image folder": (["train", "--data", "imagefolder:no_such_folder", "--out", "new_run"],
                                    ["no_such_folder"]),
    # --- files of the wrong kind --------------------------------------------------------------
    "eval: a table as checkpoint": (["eval", "--checkpoint", "lut.json"], ["not a readable autoslim-hw checkpoint"]),
    "eval: a folder as checkpoint": (["eval", "--checkpoint", "a_folder"], ["a_folder"]),
    "eval: another tool's state_dict": (["eval", "--checkpoint", "state_dict.pt"], ["not an autoslim-hw checkpoint"]),
    "lut info: a checkpoint as table": (["lut", "info", "run/supernet.pt"], ["not a readable lookup table"]),
    "lut info: a folder as table": (["lut", "info", "a_folder"], ["a_folder"]),
    "search: a checkpoint as table": (["search", "--checkpoint", "run/supernet.pt", "--lut", "run/supernet.pt",
                                       "--latency-ms", "1"], ["not a readable lookup table"]),
    "count: a table as channel config": (["count", "--model", "mobilenet_v2_cifar", "--channels", "lut.json"],
                                         ["channel config"]),
    "count: a gzip file as channel config": (["count", "--model", "mobilenet_v2_cifar", "--channels",
                                              "truncated.json.gz"], ["not a text (JSON) file"]),
    "export: a picture as config": (["export", "--checkpoint", "run/supernet.pt", "--config", "picture.png"],
                                    ["picture.png"]),
    "export: a checkpoint as config": (["export", "--checkpoint", "run/supernet.pt", "--config", "run/supernet.pt"],
                                       ["supernet.pt"]),
    "train: a checkpoint as --arch": (["train", "--arch", "run/supernet.pt", "--out", "new_run"], ["supernet.pt"]),
    "lut run-local: a file as bundle": (["lut", "run-local", "lut.json", "--out", "results"], ["lut.json"]),
    # --- corrupt files ------------------------------------------------------------------------
    "eval: corrupt checkpoint": (["eval", "--checkpoint", "corrupt.pt"], ["not a readable autoslim-hw checkpoint"]),
    "export: corrupt checkpoint": (["export", "--checkpoint", "corrupt.pt"], ["not a readable"]),
    "lut info: truncated gzip table": (["lut", "info", "truncated.json.gz"], ["not a readable lookup table"]),
    "lut validate: corrupt table": (["lut", "validate", "corrupt.json"], ["not a readable lookup table"]),
    "count: corrupt channel config": (["count", "--model", "mobilenet_v2_cifar", "--channels", "corrupt.json"],
                                      ["not valid JSON"]),
    "export: corrupt config": (["export", "--checkpoint", "run/supernet.pt", "--config", "corrupt.json"],
                               ["corrupt.json"]),
    # --- things that do not belong together ------------------------------------------------------
    "search: table of another model": (["search", "--checkpoint", "run/supernet.pt", "--lut", "other_model_lut.json",
                                        "--latency-ms", "1"], ["profiled for", "--allow-mismatch"]),
    "search: table of another device": (["search", "--checkpoint", "run/supernet.pt", "--lut", "lut.json",
                                         "--device", "cpu-2core", "--latency-ms", "1"], ["'cpu-2core'"]),
    "export: config of another model": (["export", "--checkpoint", "run/supernet.pt", "--config",
                                         "other_config.json"], ["features.99"]),
    "eval: config of another model": (["eval", "--checkpoint", "run/supernet.pt", "--channels", "other_config.json"],
                                      ["features.99"]),
    "lut validate: table of another model": (["lut", "validate", "other_model_lut.json", "--checkpoint",
                                              "run/supernet.pt"], ["profiled for"]),
    "profile: resume a table of another runtime": (["profile", "--checkpoint", "run/supernet.pt", "--runtime",
                                                    "litert", "--out", "lut.json", "--resume"], ["'onnxruntime'"]),
    "train: resume from a corrupt run": (["train", "--out", "corrupt_run", "--resume"], ["corrupt_run"]),
    "lut info: a NaN latency": (["lut", "info", "lut_nan.json"], ["lut_nan.json", "ms", "finite"]),
    "lut info: a negative latency": (["lut", "info", "lut_negative.json"], ["lut_negative.json", "negative"]),
    "lut info: no device in the metadata": (["lut", "info", "lut_no_device.json"], ["metadata.device"]),
    "lut info: no entries": (["lut", "info", "lut_empty.json"], ["no measurements"]),
    "search: a NaN latency in the table": (["search", "--checkpoint", "run/supernet.pt", "--lut", "lut_nan.json",
                                            "--latency-ms", "1"], ["lut_nan.json", "finite"]),
    "search: a negative latency in the table": (["search", "--checkpoint", "run/supernet.pt", "--lut",
                                                 "lut_negative.json", "--latency-ms", "1"], ["negative"]),
    "search: a table without device": (["search", "--checkpoint", "run/supernet.pt", "--lut", "lut_no_device.json",
                                        "--latency-ms", "1"], ["metadata.device"]),
    "search: an empty table": (["search", "--checkpoint", "run/supernet.pt", "--lut", "lut_empty.json",
                                "--latency-ms", "1"], ["no measurements"]),
    "train: a NaN learning rate": (["train", "--lr", "nan", "--out", "new_run"], ["--lr", "finite"]),
    "eval: a NaN width": (["eval", "--checkpoint", "run/supernet.pt", "--width", "nan"], ["--width", "finite"]),
    "train: --out is a file": (["train", "--out", "picture.png"], ["picture.png", "is a file"]),
    "train: --out under a file": (["train", "--out", "picture.png/run"], ["picture.png", "not a directory"]),
    "search: --out under a file": (["search", "--checkpoint", "run/supernet.pt", "--flops", "1G", "--out",
                                    "picture.png/s.json"], ["picture.png", "not a directory"]),
    "export: --out under a file": (["export", "--checkpoint", "run/supernet.pt", "--config", "config.json",
                                    "--out", "picture.png/x.onnx"], ["picture.png", "not a directory"]),
    "profile: --out under a file": (["profile", "--checkpoint", "run/supernet.pt", "--out", "picture.png/t.json"],
                                    ["picture.png", "not a directory"]),
    "profile: --out is a directory": (["profile", "--checkpoint", "run/supernet.pt", "--out", "a_folder"],
                                      ["a_folder", "is a directory"]),
    # --- impossible targets and bad numbers ----------------------------------------------------------
    "search: unreachable MACs": (["search", "--checkpoint", "run/supernet.pt", "--flops", "1"], ["unreachable"]),
    "search: unreachable latency": (["search", "--checkpoint", "run/supernet.pt", "--lut", "lut.json",
                                     "--latency-ms", "0.00001"], ["unreachable"]),
    "search: a target that is no number": (["search", "--checkpoint", "run/supernet.pt", "--params", "lots"],
                                           ["--params 'lots'"]),
    "count: width out of range": (["count", "--model", "mobilenet_v2_cifar", "--width", "9"], ["9"]),
    "count: input too small": (["count", "--model", "mobilenet_v2_cifar", "--input-size", "2"], ["--input-size"]),
    "count: unknown model": (["count", "--model", "mobilenet_v9"], ["mobilenet_v9", "mobilenet_v2"]),
    "units: unknown model": (["units", "--model", "resnet5"], ["resnet5"]),
    "train: zero epochs": (["train", "--epochs", "0", "--out", "new_run"], ["--epochs"]),
    "train: unknown dataset": (["train", "--data", "imagenet22k", "--out", "new_run"], ["imagenet22k"]),
    "profile: zero passes": (["profile", "--checkpoint", "run/supernet.pt", "--passes", "0", "--out", "p.json"],
                             ["--passes"]),
    "profile: zero jobs": (["profile", "--checkpoint", "run/supernet.pt", "--jobs", "0", "--out", "p.json"],
                           ["--jobs"]),
    "profile: unknown runtime": (["profile", "--runtime", "tensorrt"], ["tensorrt", "onnxruntime"]),
    "lut validate: one sample": (["lut", "validate", "lut.json", "--samples", "1"], ["--samples"]),
    "lut validate: zero rounds": (["lut", "validate", "lut.json", "--rounds", "0"], ["--rounds"]),
    "export: unknown format": (["export", "--checkpoint", "run/supernet.pt", "--config", "config.json", "--format",
                                "pdf"], ["pdf"]),
    "export: target out of range": (["export", "--checkpoint", "run/supernet.pt", "--config", "config.json",
                                     "--target", "9"], ["--target"]),
    "demo: unknown dataset": (["demo", "--data", "imagenet22k", "--out", "new_run"], ["imagenet22k"]),
    "search: --cost without drop-per-cost": (["search", "--checkpoint", "run/supernet.pt", "--flops", "1M",
                                              "--cost", "flops"], ["--criterion drop-per-cost"]),
    "search: unknown --cost": (["search", "--checkpoint", "run/supernet.pt", "--flops", "1M", "--criterion",
                                "drop-per-cost", "--cost", "joules"], ["--cost", "joules", "flops"]),
    # --- training settings out of range (each names its option)
    **{f"train: {opt} {val}": (["train", opt, val, "--out", "new_run"], [opt]) for opt, val in (
        ("--weight-decay", "-1"), ("--input-size", "0"), ("--num-random", "-1"), ("--label-smoothing", "1.5"),
        ("--save-every", "-1"), ("--seed", "-3"), ("--width-max", "0"), ("--groups", "0"))},
    # --- files against their schemas ---------------------------------------------------------------
    "profile: device file with 0 threads": (["profile", "--device", "device_zero_threads.json", "--out", "t.json"],
                                            ["device_zero_threads.json", "threads"]),
    "profile: device file without a name": (["profile", "--device", "device_no_name.json", "--out", "t.json"],
                                            ["device_no_name.json", "name"]),
    "profile: missing device file": (["profile", "--device", "no_such_device.json"], ["no_such_device.json"]),
    "eval: config with a 0 width": (["eval", "--checkpoint", "run/supernet.pt", "--channels", "config_zero_width.json"],
                                    ["config_zero_width.json", "widths.features.0.0"]),
    "eval: config with a text width": (["eval", "--checkpoint", "run/supernet.pt", "--channels",
                                        "config_text_width.json"], ["config_text_width.json", "integer"]),
    "train --arch: config with a 0 width": (["train", "--arch", "config_zero_width.json", "--out", "new_run"],
                                            ["config_zero_width.json"]),
    "lut import: manifest naming a file outside": (["lut", "import", "a_folder", "--bundle", "bundle_escaping",
                                                    "--device", "p", "--out", "t.json"],
                                                   ["manifest.json", "models.0.file"]),
    "eval: subnet checkpoint without config": (["eval", "--checkpoint", "subnet_without_config.pt"],
                                               ["subnet_without_config.pt", "channel config"]),
    "eval: checkpoint with width_max 1e300": (["eval", "--checkpoint", "huge_width.pt"], ["width_max"]),
}


@pytest.fixture(scope="module")
def results(files):
    """All cases at once, two at a time (each is a fresh interpreter: start-up dominates)."""
    corrupt_run = files / "corrupt_run"
    corrupt_run.mkdir()
    (corrupt_run / "supernet.pt").write_bytes(b"PK\x03\x04 half a zip")
    before = {p for p in files.rglob("*")}

    def one(args):
        return run_cli(*args, cwd=files, timeout=240)

    with ThreadPoolExecutor(2) as pool:
        out = dict(zip(CASES, pool.map(one, [args for args, _ in CASES.values()])))
    return out, {p for p in files.rglob("*")} - before


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2(case, results):
    out, _ = results
    assert_user_error(out[case], *CASES[case][1])


def test_no_command_wrote_a_file(results):
    _, new = results
    assert not new, sorted(str(p) for p in new)
