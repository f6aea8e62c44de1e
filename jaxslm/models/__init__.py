"""Model definitions: the Llama / Qwen2 decoder and its configuration.

`Decoder` imports jax and flax on first use; the config classes are light.
"""

from typing import Any

from jaxslm.models.model_config import Llama3RopeScaling, ModelConfig

__all__ = ["Decoder", "Llama3RopeScaling", "ModelConfig"]


def __getattr__(name: str) -> Any:
    if name == "Decoder":
        from jaxslm.models.decoder import Decoder

        return Decoder
    raise AttributeError(f"module 'jaxslm.models' has no attribute {name!r}")
