"""Built-in architectures. Importing a family module registers its models."""
from . import (efficientnet, mnasnet, mobilenet_v1, mobilenet_v2, mobilenet_v3, regnet, resnet,  # noqa: F401
               shufflenet)  # (registration)
from ._builder import build_from_spec, create_model, published_config
from ._registry import list_models, model_entry

__all__ = ["create_model", "build_from_spec", "published_config", "list_models", "model_entry"]
