"""GGUF files: the memory-mapped reader. Model loading lives in ``openformers.models.gguf_loading``."""
from openformers.models.gguf.reader import GGUFError, GGUFFile, TensorInfo

__all__ = ["GGUFError", "GGUFFile", "TensorInfo"]
