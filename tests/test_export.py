"""`autoslim-hw export`: a searched subnet as ONNX, TFLite, TorchScript or a subnet checkpoint
computes what the materialized PyTorch model with recalibrated BN computes."""
import json

import numpy as np
import pytest
import torch

from autoslim_hw.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from autoslim_hw.counting import count
from autoslim_hw.data import load_splits, make_loader
from autoslim_hw.errors import UserError
from autoslim_hw.nn.materialize import materialize
from autoslim_hw.workflows.export import build_subnet, export_subnet, predict_export_latency
from autoslim_hw.models import create_model
from autoslim_hw._io import file_digest
from autoslim_hw.nn.batchnorm import recalibrate_bn
from autoslim_hw.train import TrainSettings
from tests.cli_helpers import assert_user_error, run_cli
from tests.conftest import randomize_bn

SHAPE = (1, 1, 16, 16)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One thread here and in the CLI subprocesses: tiny models on shared cores run several
    times faster without OpenMP threads waiting on each other."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def tiny_supernet():
    return create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16, num_classes=10, in_chans=1)


def nonuniform(space):
    """A config off the uniform line: every unit at a different fraction of its maximum."""
    widths = {}
    for i, u in enumerate(space.free_units):
        widths[u.name] = u.options[(i * 3 + 2) % len(u.options)]
    return type(space.largest())(widths)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A supernet checkpoint as `autoslim-hw train` writes it (untrained weights, BN made
    non-trivial), a channel config, and a hand-written search result with three targets."""
    root = tmp_path_factory.mktemp("export")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = tiny_supernet()
    randomize_bn(net, (8, 1, 16, 16))
    settings = TrainSettings(data="digits", model="mobilenet_v2_cifar", input_size=16,
                             model_kwargs={"width_mult": 0.35}, limit=256, epochs=1)
    ckpt = root / "run" / "supernet.pt"
    save_checkpoint(ckpt, {"kind": "supernet", "spec": net.spec.to_dict(), "config": None,
                           "model": net.state_dict(), "optimizer": {}, "epoch": 1, "step": 8,
                           "settings": settings.to_dict(), "rng": None, "epoch_losses": []})
    space = net.space
    configs = {"nonuniform": nonuniform(space), "half": space.uniform(0.5, snap=True), "largest": space.largest()}
    (root / "half.json").write_text(configs["half"].to_json())

    def entry(cfg, limit):
        c = count(net, cfg)
        return {"constraints": {"macs": limit}, "met": True, "step": 3, "config": dict(cfg),
                "layers": space.to_layer_list(cfg), "accuracy": 42.0, "macs": c.macs, "params": c.params,
                "memory": c.memory, "latency_ms": None}

    search = {"format": "autoslim-hw/search", "version": 1, "status": "done", "model": net.spec.to_dict(),
              "checkpoint": {"path": str(ckpt), "sha256": file_digest(ckpt)}, "lut": None, "settings": {},
              "trajectory": [],
              "targets": [entry(configs["nonuniform"], 2e6), entry(configs["half"], 1.5e6),
                          {"constraints": {"macs": 10.0}, "met": False}]}
    (root / "search.json").write_text(json.dumps(search))
    return {"root": root, "ckpt": ckpt, "supernet": net, "configs": configs, "search": root / "search.json",
            "half": root / "half.json", "settings": settings, "references": {}}


def reference(run, config):
    """Built here from the primitives: materialize, then BN re-estimated on 20 training batches."""
    if config in run["references"]:
        return run["references"][config]
    supernet, _, _ = model_from_checkpoint(load_checkpoint(run["ckpt"]))
    model = materialize(supernet, config)
    s = run["settings"]
    splits = load_splits("digits", input_size=16, in_chans=1, search_size=s.search_size, seed=s.seed, limit=s.limit)
    recalibrate_bn(model, None, make_loader(splits.train_eval, 128, shuffle=True, seed=s.seed), 20)
    run["references"][config] = model.eval()
    return model


def run_file(fmt, path, x):
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if fmt == "tflite":
        from autoslim_hw.profilers.litert_backend import run_tflite

        return run_tflite(path, [x.numpy()])
    if fmt == "torch":
        return torch.jit.load(str(path)).eval()(x).detach().numpy()
    ckpt = load_checkpoint(path)  # a plain subnet checkpoint: loads safely, weights_only
    assert ckpt["kind"] == "subnet"
    return model_from_checkpoint(ckpt)[2].eval()(x).detach().numpy()


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "torch", "checkpoint"])
def test_cli_export_matches_pytorch(run, fmt, tmp_path):
    out = tmp_path / "deep" / "dir" / f"subnet.{fmt}"  # parent folders are created
    if fmt == "onnx":  # the config from target 0 of the search result
        args, config = ["--config", run["search"], "--target", "0"], run["configs"]["nonuniform"]
    else:
        args, config = ["--config", run["half"]], run["configs"]["half"]
    human = fmt == "tflite"
    argv = ["export", "--checkpoint", str(run["ckpt"]), *map(str, args), "--format", fmt, "--out", str(out),
            *([] if human else ["--json"])]
    if fmt in ("onnx", "tflite"):  # as a user runs it
        r = run_cli(*argv)
        assert r.returncode == 0, r.stderr[-3000:]
    else:  # in this process: the same command without another interpreter's start-up
        from typer.testing import CliRunner

        from autoslim_hw.cli import app

        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 0, (r.output, r.exception)
    assert out.is_file() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left
    c = count(run["supernet"], config)
    if human:
        assert "NHWC [1, 16, 16, 1]" in r.stdout
        assert "BN statistics re-estimated" in r.stdout and "20 batches" in r.stdout
        assert "latency (litert, 1 thread" in r.stdout and "median" in r.stdout and " ms" in r.stdout
        assert "no prediction" in r.stdout and "max abs diff" in r.stdout
    else:
        rec = json.loads(r.stdout)
        assert rec["out"] == str(out) and rec["format"] == fmt and rec["kind"] == "supernet"
        assert rec["config"] == dict(config) and rec["bn_recalibrated_batches"] == 20
        assert rec["params"] == c.params and rec["macs"] == c.macs and rec["file_bytes"] == out.stat().st_size
        assert rec["max_rel_diff"] < 1e-4 and rec["latency_ms"] > 0 and rec["runtime"]
        assert rec["predicted_latency_ms"] is None
        assert rec["target"] == (0 if fmt == "onnx" else None)

    ref = reference(run, config)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x).numpy()
        stale = materialize(run["supernet"], config).eval()(x).numpy()  # the supernet's shared BN statistics
    got = run_file(fmt, out, x)
    assert got.shape == want.shape == (1, 10)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(stale - want).max() > 1e-2 * scale  # recalibration mattered, and is in the file


def test_onnx_size_scales_with_params(run, tmp_path):
    sizes, params = {}, {}
    for name in ("largest", "half"):
        cfg_path = tmp_path / f"{name}.json"
        cfg_path.write_text(run["configs"][name].to_json())
        info = export_subnet(run["ckpt"], cfg_path, fmt="onnx", out=tmp_path / f"{name}.onnx", calib_batches=0)
        sizes[name], params[name] = info.path.stat().st_size, count(run["supernet"], info.config).params
    assert params["half"] < 0.5 * params["largest"]
    assert sizes["half"] / sizes["largest"] == pytest.approx(params["half"] / params["largest"], rel=0.1)


def test_subnet_checkpoint_reexports_its_own_weights(run, tmp_path):
    sub = export_subnet(run["ckpt"], run["half"], fmt="checkpoint", out=tmp_path / "sub.pt", calib_batches=0)
    assert sub.calib_batches == 0 and "not recalibrated" in sub.warnings[0]
    again = export_subnet(sub.path, None, fmt="torch", out=tmp_path / "sub_ts.pt")
    assert again.kind == "subnet" and again.config == run["configs"]["half"] and again.calib_batches == 0
    x = torch.randn(SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(run_file("torch", again.path, x), sub.model(x).numpy(), rtol=1e-5, atol=1e-6)
    same = build_subnet(sub.path, run["half"])  # naming its own config is fine
    assert same.config == run["configs"]["half"]
    with pytest.raises(UserError, match="retrained at fixed widths"):
        export_subnet(sub.path, run["search"], target=0, fmt="onnx", out=tmp_path / "x.onnx")
    with pytest.raises(UserError, match="is a supernet: pass --config"):
        export_subnet(run["ckpt"], None, fmt="onnx", out=tmp_path / "x.onnx")


def test_lookup_table_prediction(run, tmp_path):
    from autoslim_hw.lookup_tables import LatencyTable, config_signatures, model_key

    net, cfg = run["supernet"], run["configs"]["nonuniform"]
    table = LatencyTable({"device": {"name": "cpu-1core"}, "runtime": "onnxruntime", "latency_statistic": "p10",
                          "models": [{"key": model_key(net)}]})
    sigs = config_signatures(net, cfg)
    for sig in sigs:
        table.add(sig, 0.01, 0.01, 0.01)
    lut = tmp_path / "lut.json"
    table.save(lut)
    search = json.loads(run["search"].read_text())
    search["lut"] = {"path": str(lut), "sha256": file_digest(lut), "device": "cpu-1core", "runtime": "onnxruntime"}
    (tmp_path / "search.json").write_text(json.dumps(search))
    info = build_subnet(run["ckpt"], tmp_path / "search.json", target=0, calib_batches=0)
    info.fmt = "onnx"
    pred = predict_export_latency(info)  # the search's table, same runtime
    assert pred["latency_ms"] == pytest.approx(0.01 * len(sigs)) and pred["lut"] == str(lut)
    assert predict_export_latency(info, lut)["latency_ms"] == pytest.approx(0.01 * len(sigs))
    info.fmt = "tflite"  # the search's table prices ONNX Runtime, not LiteRT
    assert predict_export_latency(info)["latency_ms"] is None


def test_bad_input_is_one_line(run, tmp_path):
    ckpt = run["ckpt"]
    assert_user_error(run_cli("export", "--checkpoint", ckpt, "--config", run["search"], "--target", "2",
                              "--out", tmp_path / "a.onnx"), "target 2", "not met", "met targets: 0, 1")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"widths": {"features.0.0": 8,')
    assert_user_error(run_cli("export", "--checkpoint", ckpt, "--config", corrupt, "--no-measure",
                              "--out", tmp_path / "b.onnx"), "not valid JSON")
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()

    def raises(match, config=None, **kw):
        with pytest.raises(UserError, match=match):
            export_subnet(kw.pop("checkpoint", ckpt), config, out=tmp_path / "c.onnx", **kw)

    raises("out of range.*3 targets.*0: MACs <= 2.00M \\(met\\).*2: MACs <= 10 \\(not met\\)", run["search"], target=3)
    raises("out of range", run["search"], target=-1)
    raises("has 3 targets; pick one with --target", run["search"])
    raises("--target picks a target of a search result", run["half"], target=0)
    raises("unknown --format 'keras'", run["half"], fmt="keras")
    raises("does not exist", tmp_path / "missing.json")
    raises("does not exist", run["half"], checkpoint=tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02garbage")
    raises("not a readable autoslim-hw checkpoint", run["half"], checkpoint=broken)
    other = create_model("mobilenet_v1", input_size=16, num_classes=10, in_chans=1)
    (tmp_path / "other.json").write_text(other.space.uniform(0.5).to_json())
    raises("neither a unit nor a conv/linear layer of this model", tmp_path / "other.json")
    search = json.loads(run["search"].read_text())
    search["model"] = {**search["model"], "input_size": 32}
    (tmp_path / "s32.json").write_text(json.dumps(search))
    raises("searched on another model", tmp_path / "s32.json", target=0)
    assert not (tmp_path / "c.onnx").exists()
