"""Procedural data: synthetic kidney histology and fetal MRI phantoms."""
