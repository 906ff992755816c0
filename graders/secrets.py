"""What a key looks like, so a key pasted where the NAME of its environment variable belongs is refused
before it reaches a run file (config.yaml, logs, bundles). Used by the grader specs and config validation."""

from __future__ import annotations

import re

# OpenAI, Hugging Face, GitHub and Slack keys. Real keys start lower-case; variable names are upper-case by
# convention (HF_TOKEN and SK_JUDGE are names, not keys).
_KEY_PREFIX = re.compile(r"^(sk|hf|gh[pousr]|github_pat|xox[abp])[-_]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_variable_name(text: str) -> bool:
    """True for an environment variable's name; False for a pasted key or anything else."""
    return bool(_NAME.fullmatch(text)) and not _KEY_PREFIX.match(text)
