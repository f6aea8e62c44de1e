"""Scaling tools: FLOP and parameter accounting (and, later, sweeps and L(N, D) fits)."""
