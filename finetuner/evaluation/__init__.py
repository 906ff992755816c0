"""After (or before) training: held-out evaluation, chat, grader dry runs on a run's data."""
