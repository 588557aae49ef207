"""llmb: a benchmark suite for large-language-model pretraining performance."""

__version__ = "0.1.0"
