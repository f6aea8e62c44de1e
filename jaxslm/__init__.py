"""jaxslm: train, evaluate and scale speech language models in JAX."""

from jaxslm.api import SpeechLM, load
from jaxslm.errors import JaxslmError
from jaxslm.vocab import SpeechVocab

__all__ = ["JaxslmError", "SpeechLM", "SpeechVocab", "load"]
__version__ = "0.1.0"
