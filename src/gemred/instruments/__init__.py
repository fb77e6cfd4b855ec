"""Instrument facts: detector tables for GMOS (Hamamatsu) and GSAOI."""
