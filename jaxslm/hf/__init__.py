"""HF <-> jaxslm conversion: configs, parameter maps, streaming safetensors, import and export."""
