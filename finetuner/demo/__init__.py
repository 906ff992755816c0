"""The built-in offline demo (`python -m finetuner demo`) and its arithmetic task."""
