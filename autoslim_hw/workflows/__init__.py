"""What the commands do, as plain functions a Python user can call: each `autoslim-hw` command
parses its options, calls one of these and prints the outcome.

    from autoslim_hw.workflows import run_search
    from autoslim_hw.search import Target
    run = run_search([Target.of(latency_ms=5.0)], checkpoint="runs/x/supernet.pt")
"""
from .common import config_from_options, model_for, newest_checkpoint, open_checkpoint
from .evaluate import evaluate_checkpoint
from .export import build_subnet, check_export, export_formats, export_subnet, measure_export, predict_export_latency
from .profile import profile, validate_lut
from .search import run_search
from .train import run_training

__all__ = ["config_from_options", "model_for", "newest_checkpoint", "open_checkpoint", "evaluate_checkpoint",
           "build_subnet", "check_export", "export_formats", "export_subnet", "measure_export",
           "predict_export_latency", "profile", "validate_lut", "run_search", "run_training"]
