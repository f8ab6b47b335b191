"""Inference over images larger than the network's window."""
