"""Latency lookup tables: signatures, the table and its predictions, calibration, building,
validating, finding a table, and phone tables (`phone`)."""
from .signatures import Signature, config_signatures, deployed_ops, enumerate_signatures
from .table import LatencyTable, Prediction, model_key

__all__ = ["Signature", "config_signatures", "deployed_ops", "enumerate_signatures", "LatencyTable",
           "Prediction", "model_key"]
