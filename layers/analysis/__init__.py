"""Analyses of a model on the meta device: trace, summary, memory, fit, the trace budget."""
