"""OpenAI grader JSON in, our grader specs out.

Our field names are OpenAI's for the types OpenAI has (string_check, text_similarity, python, score_model,
label_model, multi), so a grader written for OpenAI's reinforcement fine-tuning loads unchanged. This module
only unwraps the containers OpenAI uses (a fine-tuning job's `method.reinforcement.grader`, the graders
API's `{"grader": ...}`), drops API metadata (`id`, `created_at`, ...) and fills in missing names.
What cannot run here fails at build time with a clear message: the `cosine` metric (needs OpenAI's
embeddings), image inputs in judge messages. A `score_model` without `base_url` talks to OpenAI's API (or
to OPENAI_BASE_URL when set) with the key in OPENAI_API_KEY, exactly as the official client does.
"""

from __future__ import annotations

import json

from graders.base import GraderConfigError

_METADATA = {"id", "object", "created_at", "updated_at"}


def unwrap(obj):
    """The grader (dict) or graders (list) inside an OpenAI payload, or `obj` itself."""
    if isinstance(obj, dict) and "type" not in obj:
        method = obj.get("method")
        if isinstance(method, dict):
            grader = (method.get("reinforcement") or {}).get("grader")
            if grader is not None:
                return grader
        if "grader" in obj:
            return obj["grader"]
    return obj


def from_openai(obj: dict, default_name: str = "grader") -> dict:
    """One OpenAI grader (possibly a multi) as our spec."""
    if not isinstance(obj, dict):
        raise GraderConfigError(f"an OpenAI grader must be a JSON object, not {type(obj).__name__}.")
    spec = {k: v for k, v in obj.items() if k not in _METADATA}
    spec.setdefault("name", default_name)
    if spec.get("type") == "multi" and isinstance(spec.get("graders"), dict):
        subs = {}
        for key, sub in spec["graders"].items():
            if isinstance(sub, dict):
                sub = {k: v for k, v in sub.items() if k not in _METADATA}
            subs[key] = sub
        spec["graders"] = subs
    return spec


def load_openai(obj, base_dir: str = "", name: str = "grader"):
    """Build graders straight from OpenAI grader JSON (a dict, a JSON string or a payload holding one)."""
    from graders.build import build_graders

    if isinstance(obj, str):
        obj = json.loads(obj)
    obj = unwrap(obj)
    items = obj if isinstance(obj, list) else [obj]
    specs = [from_openai(g, name if len(items) == 1 else f"{name}_{i}") for i, g in enumerate(items)]
    return build_graders(specs, base_dir)
