"""Before a run: memory estimate, model shapes, GPU defaults, method advice, measured step times."""
