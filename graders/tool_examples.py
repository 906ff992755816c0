"""The built-in example tools offered in the Tools tab, as Python source the user can read and edit.

Each is an ordinary tool (graders/tools.py): it runs in the grader sandbox like any code the user writes.
`table_lookup` reads the CSV named by the tool's `table` field, whose path the sandbox puts in `TABLE`.
"""

from __future__ import annotations

CALCULATOR = '''import ast
import operator

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ValueError("only numbers and + - * / // % ** are allowed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: The arithmetic to do, for example 347+589 or (12*7)/3.
    """
    value = _eval(ast.parse(expression.strip(), mode="eval"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
'''

TABLE_LOOKUP = '''import csv


def lookup(key: str, column: str = "") -> str:
    """Find the row of the table whose first column equals key.

    Args:
        key: The value to look for in the table's first column.
        column: The column to return; leave empty to get the whole row.
    """
    with open(TABLE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return "the table is empty"
    first = next(iter(rows[0]))
    for row in rows:
        if str(row[first]).strip().lower() == key.strip().lower():
            if not column:
                return ", ".join(f"{k}: {v}" for k, v in row.items())
            if column not in row:
                return f"no column {column!r}; columns are: {', '.join(row)}"
            return str(row[column])
    return f"no row with {first} = {key!r}"
'''

PYTHON_EVAL = '''import math


def python_eval(expression: str) -> str:
    """Evaluate one Python expression (math functions allowed) and return its value.

    Args:
        expression: A Python expression, for example sum(range(10)) or math.sqrt(2).
    """
    value = eval(expression, {"__builtins__": {"abs": abs, "min": min, "max": max, "sum": sum, "len": len,
                                               "range": range, "round": round, "sorted": sorted},
                              "math": math})
    return repr(value)
'''

# name -> (source, the function's name, what the Tools tab says about it)
EXAMPLES = {
    "calculator": (CALCULATOR, "calculator", "Arithmetic: + - * / // % ** on numbers."),
    "table_lookup": (TABLE_LOOKUP, "lookup", "Looks a key up in a CSV you upload (a tiny database)."),
    "python_eval": (PYTHON_EVAL, "python_eval", "Evaluates one Python expression, with math functions."),
}
