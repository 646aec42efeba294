"""Data: sources, tokenizers, token cache, batches."""
