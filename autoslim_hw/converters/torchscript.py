"""Plain PyTorch model -> TorchScript file: runs with torch alone, no autoslim-hw."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path


def write_torchscript(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...]) -> Path:
    """Script the model (trace it at `input_shape` where the scripter cannot compile it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, yet runs everywhere
        was_training = model.training
        model.eval()
        try:
            try:
                scripted = torch.jit.script(model)
            except Exception:  # Python the scripter cannot compile: record the graph at this input shape
                scripted = torch.jit.trace(model, torch.zeros(input_shape), check_trace=False)
        finally:
            model.train(was_training)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.jit.save(scripted, tmp, _extra_files={_SHAPE_FILE: json.dumps(list(input_shape))})
    return Path(path)


_SHAPE_FILE = "autoslim_hw_input_shape.json"  # inside the file: the shape it was written for


def torchscript_input_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The input shape `write_torchscript` recorded in the file (None for other files)."""
    extra = {_SHAPE_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return tuple(json.loads(extra[_SHAPE_FILE])) if extra[_SHAPE_FILE] else None


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()
