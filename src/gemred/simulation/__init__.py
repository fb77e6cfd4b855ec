"""Simulator of raw Gemini GMOS and GSAOI imaging frames, with a truth catalogue."""
