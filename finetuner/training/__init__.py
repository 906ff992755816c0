"""The training process: stages -> TRL trainers, callbacks, distributed runs, test-only fault hooks."""
