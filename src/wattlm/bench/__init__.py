"""COMPARE: run variants of a model and measure quality and energy per token."""
