"""A multi-turn tool-use rollout (Agent RFT) as the grader's `sample`.

TRL's tool loop hands reward functions each completion as the list of messages after the prompt: assistant
turns (with `tool_calls`), the tools' answers (`role: tool`), and the final assistant turn. Graders see:

- `sample.output_text`: the final answer, the last assistant turn's text (not the calls before it);
- `sample.output_tools`: the model's tool calls in OpenAI's shape, `[{"id", "type": "function", "function":
  {"name", "arguments": "<JSON text>"}}]`, so OpenAI graders such as
  `{{sample.output_tools[0].function.name}}` work unchanged;
- `sample.tool_calls`: the same calls, friendlier: `[{"name", "arguments": {...}, "result": "...",
  "error": bool}]`, each with the answer its tool gave;
- `sample.messages`: the whole trajectory, turn by turn;
- `sample.turns` (assistant turns) and `sample.tool_errors` (calls whose tool failed).

A plain completion has empty `output_tools` / `tool_calls` (and `turns` 1, `tool_errors` 0, `unfinished`
False; `messages` only for a trajectory), so one grader works with and without tools.
Every sample also has `sample.choices`, OpenAI's one-choice view: `[{"index": 0, "message": {"role",
"content", "tool_calls"}}]`.
"""

from __future__ import annotations

import json

# TRL's tool loop turns a tool's exception into this text (Python's str of {"error": ...}); graders/tools.py
# raises for every failed call, so a failed call is recognised by it (a tool's own JSON `{"error": ...}`
# answer is not a failure; the per-tool `tools/<name>/errors` count is exact either way).
ERROR_PREFIXES = ("{'error': ",)


# The keys a sample has (graders/base.py make_sample); a template reading any other `sample.` key can never
# work and is refused when the grader is built.
SAMPLE_KEYS = ("output_text", "output_json", "output_tools", "tool_calls", "messages", "choices", "turns",
               "tool_errors", "unfinished")


def content_text(content) -> str:
    """Message content as text: a string, or the text parts of a multi-part content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _call_parts(call) -> tuple[str, object]:
    function = call.get("function", call) if isinstance(call, dict) else {}
    return str(function.get("name", "")), function.get("arguments", {})


def is_tool_error(content) -> bool:
    return content_text(content).lstrip().startswith(ERROR_PREFIXES)


def trajectory_fields(messages: list) -> dict:
    """The sample fields of one rollout given as chat messages (see the module docstring)."""
    messages = [m for m in messages if isinstance(m, dict)]
    calls, output_tools, pending = [], [], []
    final, turns = "", 0
    for message in messages:
        role = message.get("role", "assistant")
        if role == "assistant":
            turns += 1
            final = content_text(message.get("content"))
            for call in message.get("tool_calls") or []:
                name, arguments = _call_parts(call)
                entry = {"name": name, "arguments": arguments if isinstance(arguments, dict) else {},
                         "result": None, "error": False}
                if isinstance(arguments, str):  # some parsers leave the arguments as JSON text
                    try:
                        entry["arguments"] = json.loads(arguments)
                    except ValueError:
                        entry["arguments"] = {"_raw": arguments}
                calls.append(entry)
                pending.append(entry)
                output_tools.append({"id": f"call_{len(output_tools)}", "type": "function",
                                     "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                                                  else json.dumps(arguments, ensure_ascii=False)}})
        elif role == "tool":
            entry = pending.pop(0) if pending else None
            if entry is not None:
                entry["result"] = content_text(message.get("content"))
                entry["error"] = is_tool_error(message.get("content"))
    last = messages[-1] if messages else {}
    return {"output_text": final, "output_tools": output_tools, "tool_calls": calls, "messages": messages,
            "turns": turns, "tool_errors": sum(c["error"] for c in calls),
            # the rollout stopped while the model still wanted a tool (the call limit, or no room left)
            "unfinished": bool(last.get("role") == "assistant" and last.get("tool_calls"))}


def row_fields(sample: dict) -> dict:
    """What a rollout row (samples.jsonl, eval/samples.jsonl) keeps of a tool-use sample: the turns, and the
    tool numbers the Monitor and its filters read. Empty for a sample without tools."""
    if "messages" not in sample:
        return {}
    calls = sample["tool_calls"]
    return {"trajectory": sample["messages"],
            "tools": {"calls": len(calls), "errors": sample["tool_errors"], "turns": sample["turns"],
                      "unfinished": sample["unfinished"], "names": sorted({c["name"] for c in calls})}}


def is_trajectory(output) -> bool:
    """True for a message list that involves tools (a call or a tool's answer)."""
    return isinstance(output, list) and any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool") for m in output)
