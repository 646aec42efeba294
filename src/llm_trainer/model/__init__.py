"""The model layer: nn modules and layouts. ``shape`` (the architecture), ``families`` (the
Hugging Face state-dict adapters) and ``hf_import``'s checks import without torch; ``gpt`` and
``lora`` are the torch modules. Nothing is imported here, so ``model.shape`` stays torch-free."""
