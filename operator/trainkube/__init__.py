"""trainkube: LLM pre-training, fine-tuning and evaluation as Kubernetes custom resources.

This package is the operator side (API models, planner, manifest builders, kopf handlers) and
the light run-config contract the trainer shares; it never imports torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainkube")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
