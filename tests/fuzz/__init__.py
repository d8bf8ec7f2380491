"""Fuzz tests: hypothesis strategies of structured-but-wrong input, the oracles they and the corpus share."""
