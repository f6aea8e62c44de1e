"""Speech: audio, HuBERT features, k-means units."""
