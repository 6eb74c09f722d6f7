"""lmlab: the package behind the course's notebooks, from text to tokens to a trained model to decoding."""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "corpus", "tokenizers", "exercises", "models", "objectives", "probability",
    "training", "checkpoints", "decoding", "viz", "widgets", "pretrained", "llama", "gguf",
}


def __getattr__(name):
    # `import lmlab` stays cheap; `lmlab.decoding` imports its module on first use
    if name in _SUBMODULES:
        return importlib.import_module(f"lmlab.{name}")
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
