"""Likelihood scoring and the speech-LM benchmark tasks."""
