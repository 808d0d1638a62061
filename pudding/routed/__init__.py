"""Routed inference: a base LLM that skips the blocks a trained router picks for each prompt."""
