"""Synthesis of histology from painted masks: conditions, generation and its training data."""
