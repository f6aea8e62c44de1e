"""jaxslm: train, evaluate and scale speech language models in JAX.

`load` and `SpeechLM` import jax on first use, so that command lines which fail early (a bad
config) do so without paying for it.
"""

from typing import Any

from jaxslm.errors import JaxslmError
from jaxslm.vocab import SpeechVocab

__all__ = ["JaxslmError", "SpeechLM", "SpeechVocab", "load"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("SpeechLM", "load"):
        from jaxslm import api

        return getattr(api, name)
    raise AttributeError(f"module 'jaxslm' has no attribute {name!r}")
