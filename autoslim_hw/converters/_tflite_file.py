"""The flatbuffer side of a .tflite file: tensors, constant buffers (16-byte aligned, as
converters write them), operators and their codes, serialized with LiteRT's own schema.
`converters.tflite` walks the graph and calls these."""
from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

OP = fb.BuiltinOperator
NHWC_DESCRIPTION = "autoslim-hw NHWC"  # lets run_tflite tell our files from a converter's


class _AlignedBuffer(fb.BufferT):
    """Constant data 16-byte aligned, as converters write it: the runtime reads floats in place."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = self.data.tobytes()
            builder.StartVector(1, len(raw), 16)
            builder.head -= len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


def _new(cls, **fields):
    """A schema object with its fields set (the object API's constructors take no arguments)."""
    obj = cls()
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


class TfliteFile:
    """A model under construction: append tensors, constants and ops, then serialize."""

    def __init__(self):
        self.tensors, self.buffers, self.ops, self.codes = [], [fb.BufferT()], [], {}  # buffer 0: empty

    def tensor(self, shape, name: str, data: np.ndarray | None = None, dtype=fb.TensorType.FLOAT32) -> int:
        t = _new(fb.TensorT, shape=list(shape), name=name, type=dtype, buffer=0)
        if data is not None:
            t.buffer = len(self.buffers)
            self.buffers.append(_AlignedBuffer())
            self.buffers[-1].data = np.ascontiguousarray(data)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, array: np.ndarray, name: str) -> int:
        dtype = fb.TensorType.INT32 if array.dtype == np.int32 else fb.TensorType.FLOAT32
        return self.tensor(array.shape, name, array, dtype)

    def op(self, code: int, inputs, out_shape, name: str, options=None, options_type=0, outputs: int = 1):
        """Append an op; its output tensor (a list of `outputs` tensors of `out_shape` when > 1)."""
        if code not in self.codes:
            self.codes[code] = len(self.codes)
        outs = [self.tensor(out_shape, name if outputs == 1 else f"{name}.{i}") for i in range(outputs)]
        self.ops.append(_new(fb.OperatorT, opcodeIndex=self.codes[code], inputs=list(inputs), outputs=outs,
                             builtinOptions=options, builtinOptionsType=options_type))
        return outs[0] if outputs == 1 else outs

    def serialize(self, inputs: list[int], outputs: list[int]) -> bytes:
        sub = _new(fb.SubGraphT, tensors=self.tensors, inputs=inputs, outputs=outputs, operators=self.ops, name="main")
        # dicts keep insertion order: the order of opcodeIndex; codes past 127 keep the old field at its placeholder
        codes = [_new(fb.OperatorCodeT, builtinCode=c, version=1,
                      deprecatedBuiltinCode=min(c, OP.PLACEHOLDER_FOR_GREATER_OP_CODES)) for c in self.codes]
        model = _new(fb.ModelT, version=3, subgraphs=[sub], buffers=self.buffers, operatorCodes=codes,
                     description=NHWC_DESCRIPTION)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
