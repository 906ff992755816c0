"""Loading base models (HF folder, Hub id, the built-in tiny model), 4-bit, and generation."""
