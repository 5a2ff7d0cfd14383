"""Plain (materialized) PyTorch model -> ONNX file, with the legacy TorchScript exporter."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..errors import UserError
from ..nn.materialize import is_slimmable

OPSET = 17


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...] | list[tuple[int, ...]],
                opset: int = OPSET) -> Path:
    """Export a plain (materialized) model to ONNX with the legacy exporter, atomically.
    The legacy exporter folds constants, so the file holds only the weights in use.
    `input_shape` is one shape, or a list of shapes for a model with several inputs."""
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    if is_slimmable(model):
        raise UserError("export a materialized subnet (autoslim_hw.nn.materialize), not the supernet")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        names = ["input"] if len(shapes) == 1 else [f"input{i}" for i in range(len(shapes))]
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the one that folds
            torch.onnx.export(model, tuple(torch.zeros(s, device=device) for s in shapes), tmp, dynamo=False,
                              opset_version=opset, input_names=names, output_names=["output"],
                              do_constant_folding=True)
    finally:
        model.train(was_training)
    return path
