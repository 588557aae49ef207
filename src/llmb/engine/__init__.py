"""The llmb training engine."""
