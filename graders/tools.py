"""Agent RFT tools: typed Python functions with a docstring, run in the grader sandbox, called by the model.

    tools = build_tools(cfg.tools, base_dir)       # the run config's `tools:` list
    tools[0].call({"expression": "2+3"})           # ToolResult(text="5", error=None, seconds=...)
    GRPOTrainer(..., tools=[t.function for t in tools])

A spec is {name, source | file | example, table, timeout_s, memory_mb, max_result_chars}. The function's
signature and docstring become the tool's JSON schema (transformers' `get_json_schema`, the same one TRL and
chat templates use); they are read from the source's syntax tree here, so nothing the user wrote runs in this
process. Each call runs in the sandbox (time, memory, no network) like a Python grader; an error, a timeout or
a result that is not text becomes the message the model reads back (`ToolCallFailed`, which TRL's tool loop
turns into `{'error': ...}` and counts), never an exception out of training.
"""

from __future__ import annotations

import ast
import inspect
import os
import threading
import time
import typing
from dataclasses import dataclass

from graders.base import GraderConfigError
from graders.sandbox import Program, get_pool
from graders.tool_examples import EXAMPLES

FIELDS = {"name", "type", "source", "file", "example", "table", "timeout_s", "memory_mb", "max_result_chars"}
MAX_SOURCE_BYTES = 256 * 1024
# What an argument may be annotated with: JSON-schema types, as transformers maps them.
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "tuple": tuple,
          "Optional": typing.Optional, "Literal": typing.Literal, "None": None}


class ToolCallFailed(Exception):
    """A call that did not give a result; its message is what the model reads as the tool's answer."""


@dataclass
class ToolResult:
    text: str | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


class Tool:
    def __init__(self, name: str, program: Program, signature: inspect.Signature, doc: str, memory_mb: int,
                 max_chars: int = 2000):
        self.name, self.program, self.signature, self.doc = name, program, signature, doc
        self.memory_mb, self.max_chars = memory_mb, max_chars
        self.function = self._proxy()
        self._lock = threading.Lock()
        self._stats = {"calls": 0, "errors": 0, "timeouts": 0, "seconds": 0.0}

    def __repr__(self) -> str:
        return f"Tool({self.name}{self.signature})"

    def schema(self) -> dict:
        from transformers.utils import get_json_schema

        return get_json_schema(self.function)

    def _proxy(self):
        tool = self

        def function(**kwargs):
            result = tool.call(kwargs)
            if not result.ok:
                raise ToolCallFailed(result.error)
            return result.text

        function.__name__ = function.__qualname__ = self.name
        function.__doc__ = self.doc
        function.__signature__ = self.signature
        function.__annotations__ = {p.name: p.annotation for p in self.signature.parameters.values()
                                    if p.annotation is not inspect.Parameter.empty}
        return function

    def call(self, arguments: dict) -> ToolResult:
        """Run one call in the sandbox. Never raises: a bad call is a ToolResult with `error` set."""
        started = time.monotonic()
        text, error, timeout = None, None, False
        try:
            bound = self.signature.bind(**(arguments if isinstance(arguments, dict) else {}))
        except TypeError as err:
            error = f"bad arguments for {self.name}{self.signature}: {err}"
        else:
            try:
                raw = get_pool(self.memory_mb).run(self.program, [(dict(bound.arguments), {})])[0]
            except Exception as err:  # noqa: BLE001 - the sandbox failing is the call's error, not training's
                raw = {"score": None, "error": ["runtime_error", f"the tool sandbox failed: {err}"], "log": ""}
            if raw["error"]:
                timeout = raw["error"][0] == "timeout"
                error = str(raw["error"][1])
            else:
                text = str(raw["score"])  # in tool mode the worker sends the result text in the score's place
                if len(text) > self.max_chars:  # a long result would eat the model's context
                    text = text[: self.max_chars] + f" [cut at {self.max_chars} characters]"
        seconds = time.monotonic() - started
        with self._lock:
            self._stats["calls"] += 1
            self._stats["errors"] += error is not None
            self._stats["timeouts"] += timeout
            self._stats["seconds"] += seconds
        return ToolResult(text, error, seconds)

    def drain_stats(self) -> dict:
        with self._lock:
            stats, self._stats = self._stats, {"calls": 0, "errors": 0, "timeouts": 0, "seconds": 0.0}
        return stats


def _error(spec: dict, field: str | None, problem: str) -> GraderConfigError:
    where = f"tool '{spec.get('name') or spec.get('example') or '?'}'" + (f", field '{field}'" if field else "")
    return GraderConfigError(f"{where}: {problem}")


def _source(spec: dict, base_dir: str) -> tuple[str, str, str, tuple[str, ...]]:
    """(source, filename, default function name, folders the tool may read)."""
    given = [f for f in ("source", "file", "example") if spec.get(f)]
    if len(given) != 1:
        raise _error(spec, None, "give exactly one of 'source' (the code), 'file' (a .py path) or 'example' "
                     f"(one of {', '.join(EXAMPLES)}).")
    if given[0] == "example":
        name = str(spec["example"])
        if name not in EXAMPLES:
            raise _error(spec, "example", f"no example tool {name!r}; choose one of {', '.join(EXAMPLES)}.")
        source, fn, _ = EXAMPLES[name]
        return source, f"<tool {name}>", fn, ()
    if given[0] == "source":
        if not isinstance(spec["source"], str):
            raise _error(spec, "source", "must be text (the Python code of the tool).")
        return spec["source"], f"<tool {spec.get('name') or 'source'}>", "", ()
    full = os.path.abspath(os.path.join(base_dir or "", str(spec["file"])))
    try:
        if os.path.getsize(full) > MAX_SOURCE_BYTES:
            raise _error(spec, "file", f"{full} is over {MAX_SOURCE_BYTES // 1024} kB.")
        with open(full, encoding="utf-8") as fh:
            return fh.read(), full, "", (os.path.dirname(full),)
    except (OSError, UnicodeDecodeError) as err:
        raise _error(spec, "file", f"cannot read {full}: {err}. The path is relative to the run's folder.") from None


def _annotation(node, spec: dict, arg: str):
    if node is None:
        raise _error(spec, "source", f"argument '{arg}' has no type hint; write e.g. `{arg}: str`, the model is "
                     "told the types.")
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id not in _TYPES:
            raise _error(spec, "source", f"argument '{arg}' is annotated `{ast.unparse(node)}`; use str, int, "
                         "float, bool, list or dict (the types a JSON schema has).")
        if not isinstance(sub, (ast.Name, ast.Subscript, ast.Tuple, ast.Constant, ast.BinOp, ast.BitOr, ast.Load)):
            raise _error(spec, "source", f"argument '{arg}': type hint `{ast.unparse(node)}` is not supported; use "
                         "str, int, float, bool, list or dict.")
    # Only names from _TYPES, subscripts, literals and `|` remain: evaluating that runs no user code, though a
    # nonsense combination (`str | 1`, `int[0]`) still raises, which is the tool's error, not ours.
    try:
        return eval(compile(ast.Expression(node), "<annotation>", "eval"), {"__builtins__": {}}, dict(_TYPES))  # noqa: S307
    except Exception:  # noqa: BLE001
        raise _error(spec, "source", f"argument '{arg}': type hint `{ast.unparse(node)}` is not a type; use str, "
                     "int, float, bool, list or dict (list[int] and str | None work too).") from None


def _signature(fn: ast.FunctionDef, spec: dict) -> inspect.Signature:
    args = fn.args
    if args.vararg or args.kwarg or args.posonlyargs:
        raise _error(spec, "source", f"`{fn.name}` takes *args, **kwargs or positional-only arguments; the model "
                     "calls tools with named arguments only.")
    params = []
    positional = args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
    for a, default in pairs:
        value = inspect.Parameter.empty
        if default is not None:
            try:
                value = ast.literal_eval(default)
            except Exception:  # noqa: BLE001 - not a literal, or an unhashable key in a literal dict
                raise _error(spec, "source", f"argument '{a.arg}' has a default that is not a plain value "
                             f"(`{ast.unparse(default)}`).") from None
        params.append(inspect.Parameter(a.arg, inspect.Parameter.KEYWORD_ONLY, default=value,
                                        annotation=_annotation(a.annotation, spec, a.arg)))
    return inspect.Signature(params)


def build_tool(spec: dict, base_dir: str = "") -> Tool:
    if not isinstance(spec, dict):
        raise GraderConfigError(f"each tool must be a mapping with a 'source', 'file' or 'example', not {spec!r}.")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise _error(spec, unknown[0], f"is not a field of a tool; its fields are: {', '.join(sorted(FIELDS))}.")
    if spec.get("type", "python") != "python":
        raise _error(spec, "type", "tools are Python functions: use type 'python' (or leave it out).")
    source, filename, default_fn, read_dirs = _source(spec, base_dir)
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as err:
        raise _error(spec, "source", f"line {err.lineno}: {err.msg}. Fix the Python syntax.") from None
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    asynchronous = [n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)]
    if asynchronous and (spec.get("name") in asynchronous or not functions):
        raise _error(spec, "source", f"`{asynchronous[0]}` is `async def`; write a plain `def` (the sandbox calls "
                     "tools one at a time).")
    name = str(spec.get("name") or default_fn or next((n for n in functions if not n.startswith("_")), ""))
    if not name:
        raise _error(spec, "source", "defines no function; a tool is a `def` with type hints and a docstring.")
    if not name.isidentifier():
        raise _error(spec, "name", f"{name!r} is not a Python function name.")
    if name not in functions:
        raise _error(spec, "source", f"defines no function `{name}`; the tool is the function of that name "
                     f"(found: {', '.join(functions) or 'none'}).")
    fn = functions[name]
    doc = ast.get_docstring(fn)
    if not doc:
        raise _error(spec, "source", f"`{name}` has no docstring. Say what it does and describe each argument "
                     "under 'Args:'; the model reads it.")
    signature = _signature(fn, spec)
    if spec.get("table"):
        table = os.path.abspath(os.path.join(base_dir or "", str(spec["table"])))
        if not os.path.isfile(table):
            raise _error(spec, "table", f"{table} does not exist. Upload the CSV again or fix the path.")
        source += f"\n\nTABLE = {table!r}\n"  # after the code, so line numbers in errors stay the user's
        read_dirs = read_dirs + (os.path.dirname(table),)
    elif "TABLE" in source and spec.get("example") == "table_lookup":
        raise _error(spec, "table", "the table lookup needs a CSV: upload one (field 'table').")
    timeout = _number(spec, "timeout_s", 5.0, 0.05, 600)
    max_chars = int(_number(spec, "max_result_chars", 2000, 10, 10 ** 6))
    program = Program(source, filename, timeout_s=timeout, cpu_s=timeout, kind="tool", entry=name,
                      max_output_kb=-(-max_chars // 1024), read_dirs=read_dirs)
    tool = Tool(name, program, signature, doc, int(_number(spec, "memory_mb", 1024, 256, 65536)), max_chars)
    try:
        tool.schema()
    except Exception as err:  # noqa: BLE001 - transformers' own message says what the docstring lacks
        raise _error(spec, "source", f"cannot make the tool's schema from `{name}`: {err}. Describe every "
                     "argument under 'Args:' in the docstring.") from None
    return tool


def _number(spec: dict, field: str, default: float, lo: float, hi: float) -> float:
    value = spec.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _error(spec, field, f"must be a number from {lo:g} to {hi:g}, not {value!r}.")
    return float(value)


def build_tools(specs, base_dir: str = "") -> list[Tool]:
    tools = [build_tool(s, base_dir) for s in (specs or [])]
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GraderConfigError(f"two tools are named '{dupes[0]}'; give each tool its own name.")
    return tools
