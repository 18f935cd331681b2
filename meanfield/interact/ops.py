"""Elementwise math namespaces through which the kernel formulas in ``models.kernels`` are
evaluated: the same formula text serves numpy arrays, torch tensors and KeOps LazyTensors."""
import numpy as np
import torch


class NumpyOps:
    """For numpy arrays: ``np.sqrt``, ``np.arccos``, ``np.arcsin``, ``np.clip``."""

    sqrt = staticmethod(np.sqrt)
    acos = staticmethod(np.arccos)
    asin = staticmethod(np.arcsin)

    @staticmethod
    def clamp(x, lo, hi):
        """min(max(x, lo), hi) elementwise (``np.clip``)."""
        return np.clip(x, lo, hi)


class TorchOps:
    """For torch tensors: ``torch.sqrt``, ``torch.acos``, ``torch.asin``, ``torch.clamp``."""

    sqrt = staticmethod(torch.sqrt)
    acos = staticmethod(torch.acos)
    asin = staticmethod(torch.asin)

    @staticmethod
    def clamp(x, lo, hi):
        """min(max(x, lo), hi) elementwise (``torch.clamp``)."""
        return torch.clamp(x, lo, hi)


class KeOpsOps:
    """For pykeops LazyTensors (methods, since LazyTensors are not torch tensors)."""

    @staticmethod
    def sqrt(x):
        """√x of a LazyTensor (``x.sqrt()``)."""
        return x.sqrt()

    @staticmethod
    def acos(x):
        """arccos x of a LazyTensor (``x.acos()``)."""
        return x.acos()

    @staticmethod
    def asin(x):
        """arcsin x of a LazyTensor (``x.asin()``)."""
        return x.asin()

    @staticmethod
    def clamp(x, lo, hi):
        """min(max(x, lo), hi) of a LazyTensor (``x.clamp(lo, hi)``)."""
        return x.clamp(lo, hi)
