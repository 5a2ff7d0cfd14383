"""Measured memory of an ONNX model under ONNX Runtime (CPU): per node and per network.

`profile_onnx_memory(path)` gives three independent views of what a subnet costs:

- **Per-node bytes from ORT's profiler.** A session of its own (never the timed one)
  runs with `enable_profiling`; every "Node" event of the JSON trace carries the
  node's `parameter_size`, `activation_size` (its input activations) and output shapes.
  The nodes are those of ORT's *optimized* graph: BatchNorm folded into the conv, the
  activation and often the residual Add fused into it, NCHWc layout nodes added
  (`ReorderInput`/`ReorderOutput`), so names and counts differ from the exported file.
- **Peak activation bytes by liveness** over that optimized graph, in the order ORT ran
  it: a tensor is live from the node that writes it to its last reader (graph outputs
  to the end), sizes from the profile's output shapes. Outputs of view ops (Reshape,
  Flatten, Squeeze, Unsqueeze, Identity) share their input's storage. ORT's planner also
  reuses buffers in place (a fused Conv+Add writes into its skip tensor), which this
  simple model ignores; it is the same model `counting.count(...).peak_activation_bytes`
  applies to the PyTorch graph, so the two compare like for like.
- **Process RSS delta**: resident memory of a fresh child process after it created an
  ordinary (unprofiled) session with the timed session's options and ran it, minus
  before (imports done). A child keeps earlier allocations of this process and the
  allocator's retained pages out of the number. It is an upper bound on the model's
  memory: it also holds ORT's arena (pre-allocated in chunks larger than the request),
  prepacked weight copies, thread pools, and library code pages touched by the first
  run, a roughly fixed few MB that dominates for small models.

Where the profiler reports them (recent ORT), the allocator's own counters are kept too:
`ort_in_use_peak_bytes`, the most bytes ORT's CPU allocator had handed out during any
profiled run (the first run allocates tensor by tensor; later runs allocate the
memory-pattern plan as one block), and `ort_arena_held_bytes`, what the arena reserved.
Both include more than activations: prepacked weights (allocated from the arena) and
kernel scratch buffers, so they sit above the liveness peak.

Parameter bytes: ORT's profile omits weights that a kernel prepacked (Gemm/MatMul
weights; their initializer is released after packing), so each node's parameter bytes
come from the initializers it reads in the optimized graph, which ORT saves for us;
the profile's own figure is kept as `profile_parameter_bytes`. Initializers shared by
several nodes (the exporter deduplicates equal constants, e.g. all-zero folded biases)
count once per node in `parameter_bytes` and once in `unique_parameter_bytes`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


from ..counting import peak_live
from .onnxruntime_backend import OnnxRuntimeBackend, random_feed

# bytes per element, by the type names ORT writes in `input_type_shape`/`output_type_shape`
_TYPE_BYTES = {"float": 4, "float32": 4, "double": 8, "float64": 8, "float16": 2, "bfloat16": 2,
               "int64": 8, "uint64": 8, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2,
               "int8": 1, "uint8": 1, "bool": 1}
_ONNX_TYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
# ops whose output is a view of their first input (no new buffer)
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeMemory:
    """One node of ORT's optimized graph, in execution order. Bytes, batch as exported."""

    name: str
    op_type: str
    parameter_bytes: int  # initializers the node reads (optimized graph)
    profile_parameter_bytes: int  # ORT profile's parameter_size (misses prepacked weights)
    activation_bytes: int  # ORT profile's activation_size: the node's input activations
    output_bytes: int  # ORT profile's output_size
    live_bytes: int  # activations live while this node runs (liveness model)


@dataclass(frozen=True)
class MemoryProfile:
    nodes: tuple[NodeMemory, ...]
    parameter_bytes: int  # sum over nodes of parameter_bytes
    unique_parameter_bytes: int  # distinct initializers the nodes read
    profile_parameter_bytes: int  # sum of the profile's parameter_size
    peak_activation_bytes: int  # liveness over the optimized graph
    peak_node: str  # the node at which the peak occurs
    ort_in_use_peak_bytes: int | None  # ORT allocator counter, when the profile has it
    ort_arena_held_bytes: int | None
    rss_delta_bytes: int | None  # fresh child process; None when not measured
    threads: int
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def _shape_bytes(entries) -> list[int]:
    """Bytes of each tensor in a profile `*_type_shape` list: [{"float": [1, 8, 4, 4]}, ...]."""
    out = []
    for entry in entries or []:
        (dtype, dims), = entry.items()
        n = 1
        for d in dims:
            n *= int(d)
        out.append(n * _TYPE_BYTES.get(dtype, 4))
    return out


def _last_run_events(trace: list[dict]) -> list[dict]:
    """Kernel events of the last `model_run`, in execution order."""
    kernels = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith(_KERNEL_SUFFIX)]
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if runs:
        last = max(runs, key=lambda e: e["ts"])
        kernels = [e for e in kernels if last["ts"] <= e["ts"] <= last["ts"] + last["dur"]]
    return sorted(kernels, key=lambda e: e["ts"])


def _initializer_bytes(graph) -> dict[str, int]:
    out = {}
    for init in graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        out[init.name] = n * _ONNX_TYPE_BYTES.get(init.data_type, 4)
    return out


def _value_bytes(value_info) -> int | None:
    t = value_info.type.tensor_type
    n = 1
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        n *= d.dim_value
    return n * _ONNX_TYPE_BYTES.get(t.elem_type, 4)


def peak_live_bytes(steps: list[tuple[str, list[str], list[str], list[int]]], graph_inputs: dict[str, int],
                    graph_outputs: set[str]) -> tuple[int, list[int]]:
    """Peak activation bytes of a graph run in the order of `steps`, and the live bytes while
    each step runs (`counting.peak_live`, the package's one liveness model).

    `steps`: (op_type, input names, output names, output bytes) per node; inputs not in
    `graph_inputs` and not produced by an earlier step (initializers) are ignored. View ops
    share their first activation input's storage."""
    known = set(graph_inputs)
    generic = []
    for op, inputs, outputs, out_bytes in steps:
        acts = [i for i in inputs if i in known]
        outs = []
        for k, name in enumerate(outputs):
            alias = acts[0] if op in VIEW_OPS and acts and k == 0 else None
            outs.append((name, out_bytes[k] if k < len(out_bytes) else 0, alias))
            known.add(name)
        generic.append((list(inputs), outs))
    return peak_live(generic, graph_inputs, set(graph_outputs))


def _optimized_graph(path: Path, sess, workdir: str):
    """ORT's optimized graph for `sess`'s options, saved by a second, unprofiled session."""
    import onnx
    import onnxruntime as ort

    opts = sess.get_session_options()
    opts.enable_profiling = False
    opts.optimized_model_filepath = os.path.join(workdir, "optimized.onnx")
    opts.log_severity_level = 3  # ORT warns that NCHWc graphs are hardware specific: we know
    ort.InferenceSession(str(path), opts, providers=sess.get_providers())
    return onnx.load(opts.optimized_model_filepath)


def profile_onnx_memory(onnx_path: str | os.PathLike, threads: int = 1, *, runs: int = 3,
                        rss: bool = True) -> MemoryProfile:
    """Per-node and network memory of an ONNX model under ONNX Runtime (see module doc).
    `runs` inferences on random inputs; per-node figures are the last run's. `rss=False`
    skips the child process that measures the RSS delta (well under a second)."""
    path = Path(onnx_path)
    backend = OnnxRuntimeBackend()
    sess = backend.session(path, threads, profile=True)
    feed = random_feed(sess)
    profile_file = None
    try:
        for _ in range(max(1, runs)):
            sess.run(None, feed)
    finally:
        profile_file = sess.end_profiling()
    try:
        with open(profile_file) as f:
            trace = json.load(f)
    finally:
        if profile_file and os.path.exists(profile_file):
            os.remove(profile_file)
    with tempfile.TemporaryDirectory(prefix="autoslim_mem_") as tmp:
        graph = _optimized_graph(path, sess, tmp).graph

    init_bytes = _initializer_bytes(graph)  # optimized graph: folded, reordered weights
    by_name = {n.name: n for n in graph.node}
    events = _last_run_events(trace)
    rows, steps, used_inits = [], [], set()
    for e in events:
        args = e.get("args", {})
        name = e["name"][: -len(_KERNEL_SUFFIX)]
        node = by_name.get(name)
        if node is None:
            raise RuntimeError(f"profiled node {name!r} is not in ORT's optimized graph of {path}")
        inits = [i for i in node.input if i in init_bytes]
        used_inits.update(inits)
        out_sizes = _shape_bytes(args.get("output_type_shape"))
        if not out_sizes:
            out_sizes = [int(args.get("output_size", 0))]
        steps.append((node.op_type, list(node.input), list(node.output), out_sizes))
        rows.append((name, args.get("op_name", node.op_type), sum(init_bytes[i] for i in inits),
                     int(args.get("parameter_size", 0)), int(args.get("activation_size", 0)),
                     int(args.get("output_size", sum(out_sizes)))))
    initializer_names = set(init_bytes)
    inputs = {}
    for vi in graph.input:
        if vi.name in initializer_names:
            continue
        nbytes = _value_bytes(vi)
        if nbytes is None:  # a dynamic dimension: take the size the profile saw
            nbytes = next((_shape_bytes(e["args"].get("input_type_shape"))[k]
                           for e, (_, ins, _, _) in zip(events, steps) for k, i in enumerate(ins) if i == vi.name), 0)
        inputs[vi.name] = nbytes
    peak, live = peak_live_bytes(steps, inputs, {o.name for o in graph.output})
    nodes = tuple(NodeMemory(*row, live_bytes=lv) for row, lv in zip(rows, live))
    peak_node = next((n.name for n in nodes if n.live_bytes == peak), "")

    def counter(key):
        values = [int(e["args"][key]) for e in trace if e.get("cat") == "Node" and key in e.get("args", {})]
        return max(values) if values else None

    return MemoryProfile(
        nodes=nodes,
        parameter_bytes=sum(n.parameter_bytes for n in nodes),
        unique_parameter_bytes=sum(init_bytes[i] for i in used_inits),
        profile_parameter_bytes=sum(n.profile_parameter_bytes for n in nodes),
        peak_activation_bytes=peak,
        peak_node=peak_node,
        ort_in_use_peak_bytes=counter("mem_in_use_peak"),
        ort_arena_held_bytes=counter("mem_arena_held"),
        rss_delta_bytes=rss_delta_bytes(path, threads, runs=runs, session=sess) if rss else None,
        threads=threads,
        runs=max(1, runs),
    )


# Options copied from the timed session into the RSS child (enums as ints).
_COPIED_OPTIONS = {
    "intra_op_num_threads": None, "inter_op_num_threads": None, "execution_mode": "ExecutionMode",
    "graph_optimization_level": "GraphOptimizationLevel", "execution_order": "ExecutionOrder",
    "enable_cpu_mem_arena": None, "enable_mem_pattern": None, "enable_mem_reuse": None,
    "use_deterministic_compute": None, "use_per_session_threads": None,
}

# The child imports numpy, onnxruntime and psutil only (no torch: it starts in ~0.2 s),
# takes the baseline, then builds the session from the copied options.
_RSS_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import psutil
spec = json.loads(sys.argv[1])
proc = psutil.Process()
opts = ort.SessionOptions()
before = proc.memory_info().rss
for key, (enum, value) in spec["options"].items():
    setattr(opts, key, getattr(ort, enum)(value) if enum else value)
sess = ort.InferenceSession(spec["path"], opts, providers=spec["providers"])
rng = np.random.default_rng(0)
feed = {name: rng.standard_normal(shape).astype(dtype) for name, shape, dtype in spec["inputs"]}
for _ in range(spec["runs"]):
    sess.run(None, feed)
print(json.dumps({"rss_delta": proc.memory_info().rss - before}))
"""


def _child_spec(path: Path, sess, runs: int) -> dict:
    opts = sess.get_session_options()
    options = {}
    for key, enum in _COPIED_OPTIONS.items():
        if hasattr(opts, key):
            value = getattr(opts, key)
            options[key] = (enum, int(value) if enum else value)
    feed = random_feed(sess)
    inputs = [(name, list(a.shape), a.dtype.str) for name, a in feed.items()]
    return {"path": str(path), "options": options, "providers": sess.get_providers(), "inputs": inputs,
            "runs": max(1, runs)}


def rss_delta_bytes(onnx_path: str | os.PathLike, threads: int = 1, runs: int = 3, timeout_s: float = 300,
                    session=None) -> int:
    """Resident memory an ordinary ORT session adds to a fresh process: RSS after loading
    the model and `runs` inferences minus RSS before (numpy and ONNX Runtime imported).
    The session gets the options of `OnnxRuntimeBackend().session(path, threads)`, the
    timed session. A separate process (`python -c`, so scripts need no `__main__` guard),
    so nothing this process allocated or freed earlier is counted or reused. An upper
    bound on the model's memory: it includes ORT's arena chunks, prepacked weights,
    thread pools and the library code pages the first run touches. `session`: an open
    session of this file whose options to copy instead (its profiling setting is not)."""
    path = Path(onnx_path)
    sess = session if session is not None else OnnxRuntimeBackend().session(path, threads)
    spec = _child_spec(path, sess, runs)
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(spec)], check=False, capture_output=True,
                          text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS measurement of {path} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["rss_delta"])
