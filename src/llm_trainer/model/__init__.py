"""The GPT model (torch only)."""
