"""The llmb training engine: plain PyTorch models, parallelism applied from outside, one
train loop. Importing this package imports torch; ``llmb.plan`` and ``llmb.catalog`` do not."""
