"""`autoslim-hw eval` as a library call: accuracy and costs of one config of a checkpoint."""
from __future__ import annotations

from pathlib import Path

from ..counting import count
from ..data import make_loader
from ..errors import UserError
from ..nn.batchnorm import recalibrate_bn
from ..nn.evaluate import evaluate, topk_for
from .common import calibration_loader, checkpoint_splits, config_from_options, open_checkpoint


def evaluate_checkpoint(checkpoint: Path, width: float | None = None, channels: Path | None = None,
                        layers: str | None = None, data: str | None = None, data_dir: str | None = None,
                        calib_batches: int = 20) -> dict:
    """Top-1 (and top-5) on the validation split after BN recalibration on `calib_batches`
    training batches, with MACs, params and memory. A supernet at a config (--width, --channels
    or --layers; default 1.0x), or a retrained subnet at its own widths."""
    if calib_batches < 0:
        raise UserError(f"--calib-batches must be >= 0, got {calib_batches}")
    loaded = open_checkpoint(checkpoint)
    supernet, model = loaded.supernet, loaded.model
    if loaded.config is not None:  # a retrained subnet: its widths are fixed
        if any(x is not None for x in (width, channels, layers)):
            raise UserError(f"{checkpoint} holds a retrained subnet with fixed widths; drop --width/--channels/--layers")
        config = loaded.config
    else:
        config = config_from_options(supernet, width, channels, layers)
    splits = checkpoint_splits(loaded.settings, supernet, data=data, data_dir=data_dir)
    if model is supernet:
        supernet.set_config(config)
    recalibrate_bn(model, None, calibration_loader(splits, seed=0), calib_batches)
    result = evaluate(model, make_loader(splits.val, 256, shuffle=False), topk=topk_for(supernet.spec.num_classes))
    counts = count(supernet, config)
    return {**{k: round(v, 3) for k, v in result.items()}, "macs": counts.macs, "params": counts.params,
            "memory": counts.memory}
