"""The Tools tab's pieces that need no page: tool specs from the editor, the list and schema views, the
arguments a tool's signature suggests, one hand-run call, and whether the project's model can use tools.

Tools live in the project as `project["config"]["tools"]`, specs exactly as in a run's YAML `tools:` list
(`{"name", "source", "table"?}`), so the Train tab's run config, the draft and a run's project carry them
with no code of their own. The model check reads the tokenizer only from this machine (the built-in models,
a local folder, the Hugging Face cache): it never downloads, and says so when it cannot check.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

from graders.errors import FinetunerError
from graders.tool_examples import EXAMPLES
from graders.tools import build_tool, build_tools

HEAD = ["name", "arguments", "what it does"]
TINY_NOTE = ("ℹ️ The built-in `tiny` model's chat template shows tools, but it never learned to call them: a run "
             "with tools trains, yet its rollouts will not call them. For a demo of a model that calls tools, "
             "choose `tiny-agent` on the Train tab.")


class ToolFormError(FinetunerError):
    """A tool the form cannot add as it stands (e.g. code reading TABLE without a table)."""


def tools_of(project: dict) -> list[dict]:
    return list(((project or {}).get("config") or {}).get("tools") or [])


def model_of(project: dict) -> str:
    return str((((project or {}).get("config") or {}).get("model") or {}).get("name") or "tiny").strip() or "tiny"


def spec_from(code: str, table: str | None) -> tuple[dict, object]:
    """(spec, Tool) for the editor's code; the tool's name is its function's. Raises GraderConfigError /
    ToolFormError saying what to fix."""
    if not (code or "").strip():
        raise ToolFormError("The editor is empty: write a function, or load an example.")
    spec = {"source": code}
    if "TABLE" in code:
        if not table:
            raise ToolFormError("This code reads `TABLE` (a CSV): upload the table below, then add the tool again.")
        spec["table"] = str(table)
    tool = build_tool(spec)
    return {"name": tool.name, **spec}, tool


def upsert(specs: list[dict], spec: dict) -> tuple[list[dict], bool]:
    """The list with `spec` in place of the tool of the same name (or appended); whether it replaced one."""
    out = [dict(s) for s in specs]
    for i, s in enumerate(out):
        if s.get("name") == spec["name"]:
            out[i] = spec
            return out, True
    return out + [spec], False


def _type_name(annotation) -> str:
    if annotation is inspect.Parameter.empty:
        return "?"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def arguments_text(tool) -> str:
    """`expression: str, column: str = ''`: the arguments as the person wrote them."""
    parts = []
    for p in tool.signature.parameters.values():
        part = f"{p.name}: {_type_name(p.annotation)}"
        parts.append(part if p.default is inspect.Parameter.empty else f"{part} = {p.default!r}")
    return ", ".join(parts)


def built(spec: dict):
    try:
        return build_tool(spec), ""
    except FinetunerError as err:
        return None, str(err)


def rows(specs: list[dict]) -> list[list]:
    out = []
    for spec in specs:
        tool, problem = built(spec)
        if tool is None:  # e.g. a restored draft whose table file is gone
            out.append([spec.get("name") or "?", "", f"⚠️ {problem}"])
        else:
            out.append([tool.name, arguments_text(tool), (tool.doc.strip().splitlines() or [""])[0]])
    return out


def schema_text(specs: list[dict]) -> str:
    """The JSON schema of every tool, as the model is shown them."""
    schemas = [tool.schema() for tool in (built(s)[0] for s in specs) if tool is not None]
    return json.dumps(schemas, indent=2, ensure_ascii=False) if schemas else ""


_BLANK = {str: "", int: 0, float: 0.0, bool: False, list: [], dict: {}}


def arguments_template(tool) -> str:
    """The arguments to try as JSON: each default, else an empty value of its type (`{"expression": ""}`)."""
    args = {}
    for p in tool.signature.parameters.values():
        args[p.name] = p.default if p.default is not inspect.Parameter.empty else _BLANK.get(p.annotation, "")
    return json.dumps(args, ensure_ascii=False)


def find(specs: list[dict], name: str | None) -> dict | None:
    return next((s for s in specs if s.get("name") == name), None)


def parse_arguments(text: str) -> dict:
    try:
        args = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ToolFormError(f"The arguments are not valid JSON: {err.msg} at line {err.lineno}, column "
                            f"{err.colno}. Write them like {{\"expression\": \"2+3\"}}.") from None
    if not isinstance(args, dict):
        raise ToolFormError("The arguments must be a JSON object of name: value pairs, like "
                            "{\"expression\": \"2+3\"}.")
    return args


def call_markdown(tool, args: dict) -> str:
    """One call by hand, as the model would make it: the result (or error) and the seconds it took."""
    result = tool.call(args)
    body = (result.text if result.ok else result.error) or ""
    body = body.replace("```", "'''")
    head = (f"✅ `{tool.name}` answered in {result.seconds:.2f} s; the model reads:" if result.ok else
            f"❌ `{tool.name}` failed after {result.seconds:.2f} s; the model reads this error:")
    return f"{head}\n\n```text\n{body}\n```"


def example_choices() -> list[tuple[str, str]]:
    return [(f"{name}: {desc}", name) for name, (_src, _fn, desc) in EXAMPLES.items()]


# ---------------------------------------------------------------- can the model use tools?


def _local_tokenizer_folder(name: str) -> str | None:
    """Where `name`'s tokenizer is on this machine, or None when reading it would need a download."""
    from finetuner.modeling import builtin_real, gguf_in
    from finetuner.modeling.load import resolve_model_path

    if name.lower() in ("tiny", "tiny-agent"):
        return resolve_model_path(name)  # a ModelError if tiny-agent is not built yet
    if builtin_real.is_builtin_real(name):
        return str(builtin_real.folder()) if builtin_real.is_ready() else None
    if gguf_in.is_gguf(name):
        folder = Path(resolve_model_path(name, fetch=False))
        return str(folder) if folder.is_dir() else None
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "tokenizer_config.json")
    except Exception:  # noqa: BLE001 - an id the cache cannot parse is simply not there
        return None
    return str(Path(found).parent) if isinstance(found, str) else None  # the cached snapshot: no network


@functools.lru_cache(maxsize=16)
def _loaded_tokenizer(folder: str):
    from finetuner.modeling.load import load_tokenizer

    return load_tokenizer(folder)


def _tokenizer(name: str):
    """(tokenizer or None, why not), read from this machine only; a loaded one is cached, a missing one is
    looked for again next time (the model may have been downloaded or built since)."""
    try:
        folder = _local_tokenizer_folder(name)
        if folder is None:
            return None, "its tokenizer is not on this machine yet"
        return _loaded_tokenizer(str(folder)), ""
    except FinetunerError as err:
        return None, str(err).split(". ")[0]
    except Exception as err:  # noqa: BLE001 - a tokenizer that cannot load here just cannot be checked
        return None, f"{type(err).__name__}: {err}"


def template_problem(name: str, tools) -> tuple[str | None, str]:
    """(the engine's refusal, or "" when the template can do tools; None when it cannot be checked, why)."""
    from graders.errors import ConfigError

    from finetuner.training.agent import check_tokenizer
    from finetuner.ui.data_view import TOKENIZER_LOCK

    tok, why = _tokenizer(name)
    if tok is None:
        return None, why
    try:
        with TOKENIZER_LOCK:  # add_response_schema sets the cached tokenizer's parser: one thread at a time
            check_tokenizer(tok, tools, name)
    except ConfigError as err:
        return str(err), ""
    return "", ""


class _Named:
    def __init__(self, name: str):
        self.name = name


def support_note(project: dict) -> str:
    """What the Tools tab says about the project's model and tools ("" when there is nothing to say)."""
    name = model_of(project)
    if name.lower() == "tiny":
        return TINY_NOTE
    tools = [_Named(s.get("name") or "?") for s in tools_of(project)] or [_Named("your tools")]
    problem, why = template_problem(name, tools)
    if problem is None:
        return (f"ℹ️ Whether `{name}` can call tools cannot be checked here ({why}); Launch checks it when the "
                f"model is on this machine, and the run checks it when it starts.")
    return f"⚠️ {problem}" if problem else f"✅ `{name}`'s chat template can show tools and read its tool calls."


def launch_refusal(cfg) -> str:
    """Why a run with tools cannot start with its model (the engine's own message), or "" (also when the
    tokenizer is not on this machine: the run itself checks it then)."""
    if not cfg.tools or "rft" not in cfg.method:
        return ""
    try:
        tools = build_tools(cfg.tools, cfg.base_dir)
    except FinetunerError as err:
        return str(err)
    return template_problem(cfg.model.name, tools)[0] or ""
