"""Generation: KV-cache decoding, sampling and prompts of speech and text."""
