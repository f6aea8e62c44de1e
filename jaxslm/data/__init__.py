"""Corpora and the input pipeline: records, corpus builds, the built-in corpus, interleaving,
packing and the Grain pipeline."""
