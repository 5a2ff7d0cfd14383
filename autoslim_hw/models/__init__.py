"""Built-in architectures. Importing a family module registers its models."""
from . import mnasnet, mobilenet_v1, mobilenet_v2, resnet  # noqa: F401  (registration)
from ._builder import build_from_spec, create_model
from ._registry import list_models, model_entry

__all__ = ["create_model", "build_from_spec", "list_models", "model_entry"]
