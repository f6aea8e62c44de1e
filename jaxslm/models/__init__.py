"""Model definitions: the Llama / Qwen2 decoder and its configuration."""

from jaxslm.models.config import Llama3RopeScaling, ModelConfig
from jaxslm.models.decoder import Decoder

__all__ = ["Decoder", "Llama3RopeScaling", "ModelConfig"]
