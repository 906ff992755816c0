"""Finetuner engine: RunConfig -> TRL training run -> run folder. No UI code lives here."""

__version__ = "0.1.0"
