"""Latency lookup tables: signatures, the table file, building and validating."""
from .signatures import Signature, config_signatures, deployed_ops, enumerate_signatures
from .table import LatencyTable, Prediction, model_key

__all__ = ["Signature", "config_signatures", "deployed_ops", "enumerate_signatures", "LatencyTable",
           "Prediction", "model_key"]
