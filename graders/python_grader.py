"""`python` graders: user source defining `grade(sample, item) -> float`, run in the sandbox pool.

The spec gives `source:` inline (OpenAI's field) or `file:` a path relative to the run's folder, plus
optional limits: `timeout_s`, `cpu_s`, `memory_mb`, `max_output_kb`. The source is checked here (size,
syntax, a `grade` function taking two arguments) so a broken grader fails at config time, not in step 1.
`grade_batch` sends all rows to the pool at once; what the code prints becomes each row's log.
"""

from __future__ import annotations

import ast
import os

from graders.base import Grader, GradeResult, make_sample
from graders.sandbox import Program, get_pool
from graders.spec import SpecReader

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit too


def check_source(source: str, r: SpecReader, field: str) -> None:
    """Raise a config error unless `source` is small, parses, and defines grade(sample, item)."""
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise r.error(field, f"is {size // 1024} kB; grader source may be at most {MAX_SOURCE_BYTES // 1024} "
                      "kB.", " Load big data from a file next to the grader instead of pasting it.")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise r.error(field, f"has a syntax error on line {err.lineno}: {err.msg}.",
                      f" The line reads: {(err.text or '').strip()!r}.") from None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade"]
    other = any(_binds_grade(n) for n in tree.body)
    if not defs and not other:
        raise r.error(field, "defines no function grade(sample, item).",
                      " Add `def grade(sample, item) -> float:` returning the score.")
    for node in defs:
        if isinstance(node, ast.AsyncFunctionDef):
            raise r.error(field, "defines `async def grade`; write a plain `def grade(sample, item)`.")
        args = node.args
        positional = len(args.posonlyargs) + len(args.args)
        if positional < 2 and args.vararg is None:
            raise r.error(field, f"grade() takes {positional} argument(s); it must take (sample, item).")


def _binds_grade(node) -> bool:
    """`grade = ...` or `from x import grade` also define grade (a lambda, a shared helper)."""
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == "grade" for t in targets)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any((a.asname or a.name) == "grade" for a in node.names)
    return False


class PythonGrader(Grader):
    type = "python"
    FIELDS = {"source", "file", "timeout_s", "cpu_s", "memory_mb", "max_output_kb"}
    IGNORED = {"image_tag", "pass_threshold"}  # OpenAI fields with no meaning here
    score_range = None  # whatever the user's code returns

    def __init__(self, name: str, program: Program, memory_mb: int = 2048, weight: float = 1.0):
        super().__init__(name, weight)
        self.program, self.memory_mb = program, memory_mb

    @classmethod
    def from_spec(cls, r: SpecReader, base_dir: str):
        if r.has("source") == r.has("file"):
            raise r.error("source", "give exactly one of 'source' (the code) or 'file' (a .py path).")
        read_dirs: tuple[str, ...] = ()
        if r.has("file"):
            path = r.text("file")
            full = os.path.abspath(os.path.join(base_dir or "", path))
            try:
                if os.path.getsize(full) > MAX_SOURCE_BYTES:
                    raise r.error("file", f"{path} is over {MAX_SOURCE_BYTES // 1024} kB; grader source may be "
                                  f"at most {MAX_SOURCE_BYTES // 1024} kB.")
                with open(full, encoding="utf-8") as fh:
                    source = fh.read()
            except (OSError, UnicodeDecodeError) as err:
                raise r.error("file", f"cannot read {full}: {err}.",
                              " The path is relative to the run's folder.") from None
            filename, field = full, "file"
            read_dirs = (os.path.dirname(full),)  # a grader may read data files kept next to it
        else:
            source, filename, field = r.text("source"), f"<grader {r.name}>", "source"
        check_source(source, r, field)
        timeout = r.number("timeout_s", 10.0, lo=0.05, hi=600)
        program = Program(source, filename, timeout_s=timeout, cpu_s=r.number("cpu_s", timeout, lo=0.05),
                          max_output_kb=r.number("max_output_kb", 64, lo=1, hi=16384, integer=True),
                          read_dirs=read_dirs)
        return cls(r.name, program, r.number("memory_mb", 2048, lo=256, integer=True), r.number("weight", 1.0))

    @property
    def pool(self):
        return get_pool(self.memory_mb)

    def grade_batch(self, samples, items):
        return run_program(self.pool, self.program, [make_sample(s) for s in samples], list(items))


def run_program(pool, program: Program, samples: list[dict], items: list) -> list[GradeResult]:
    """Run `program` over rows in the pool; never raises (a broken pool is every row's runtime error)."""
    rows = [(s, i if isinstance(i, dict) else {}) for s, i in zip(samples, items, strict=True)]
    try:
        raw = pool.run(program, rows)
    except Exception as err:  # noqa: BLE001 - the pool failing must not stop training
        return [GradeResult.fail("runtime_error", f"the grader sandbox failed: {err}") for _ in rows]
    out = []
    for r in raw:
        if r["error"]:
            out.append(GradeResult.fail(r["error"][0], r["error"][1], r["log"]))
        else:
            out.append(GradeResult(float(r["score"]), None, r["log"]))
    return out
