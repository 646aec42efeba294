"""Text generation from trained models (torch)."""
