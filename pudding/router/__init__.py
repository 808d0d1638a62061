"""The router (PuDDing stage 3): reads a prompt and predicts, per candidate omission set, the LLM's score with it."""
