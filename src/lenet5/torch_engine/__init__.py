"""The PyTorch engine: the networks of ``lenet5.arch`` as torch modules, on CPU or CUDA."""

from .model import TorchEngine, TorchNet

__all__ = ["TorchEngine", "TorchNet"]
