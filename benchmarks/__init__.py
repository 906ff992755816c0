"""Everything `python -m finetuner bench` runs (`python -m benchmarks`); may import anything."""
