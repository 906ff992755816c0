"""A tiny, safe arithmetic language for `multi` graders' `calculate_output` (never eval()).

Numbers, grader names, `+ - * / ^` (`**` too), parentheses and the functions
min, max, abs, floor, ceil, exp, sqrt, log (natural; log(x, base) too). `^` binds tighter than a leading
minus and groups to the right, as in mathematics: -2^2 = -4, 2^3^2 = 512.

    f = Formula("0.5 * name + 0.5 * cringe_score", names={"name", "cringe_score"})
    f.evaluate({"name": 1.0, "cringe_score": 0.2})   # 0.6

Syntax problems raise FormulaSyntaxError at parse time (with the position); arithmetic problems
(division by zero, log of 0, overflow) raise FormulaError at evaluation time.
"""

from __future__ import annotations

import math
import re

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)"
                    r"|(\*\*|[-+*/^(),]))")


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS = {
    "min": (min, 1, None), "max": (max, 1, None), "abs": (abs, 1, 1), "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1), "exp": (math.exp, 1, 1), "sqrt": (math.sqrt, 1, 1), "log": (_log, 1, 2),
}


class FormulaSyntaxError(ValueError):
    def __init__(self, message: str, text: str, pos: int):
        super().__init__(f"{message}\n    {text}\n    {' ' * pos}^")
        self.short, self.pos = message, pos


class FormulaError(ArithmeticError):
    """The formula could not be computed for these scores."""


class Formula:
    def __init__(self, text: str, names: set[str] | None = None):
        if not isinstance(text, str) or not text.strip():
            raise FormulaSyntaxError("the formula is empty", str(text), 0)
        self.text, self.names = text, names
        self.tokens = self._tokenize(text)
        self.i = 0
        self.tree = self._expr()
        if self.i < len(self.tokens):
            raise self._error(f"unexpected '{self.tokens[self.i][1]}'")
        self.variables = sorted(self._vars(self.tree))

    # -- parsing
    def _tokenize(self, text):
        tokens, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match:
                bad = len(text[pos:]) - len(text[pos:].lstrip()) + pos
                raise FormulaSyntaxError(f"'{text[bad]}' is not allowed in a formula (use numbers, grader "
                                         "names, + - * / ^, parentheses and min max abs floor ceil exp sqrt "
                                         "log)", text, bad)
            start = match.start(match.lastindex)
            kind = ("num", "name", "op")[match.lastindex - 1]
            tokens.append((kind, match.group(match.lastindex), start))
            pos = match.end()
        return tokens

    def _error(self, message, at=None):
        pos = self.tokens[self.i][2] if at is None and self.i < len(self.tokens) else (
            len(self.text) if at is None else at)
        return FormulaSyntaxError(message, self.text, pos)

    def _peek(self):
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _take(self, value=None):
        if self.i >= len(self.tokens):
            raise self._error("the formula ends too early" + (f": expected '{value}'" if value else ""))
        token = self.tokens[self.i]
        if value is not None and token[1] != value:
            raise self._error(f"expected '{value}' here, found '{token[1]}'")
        self.i += 1
        return token

    def _expr(self):
        node = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()[1]
            node = ("bin", op, node, self._term())
        return node

    def _term(self):
        node = self._unary()
        while self._peek() in ("*", "/"):
            op = self._take()[1]
            node = ("bin", op, node, self._unary())
        return node

    def _unary(self):
        if self._peek() in ("-", "+"):
            op = self._take()[1]
            inner = self._unary()
            return ("neg", inner) if op == "-" else inner
        return self._power()

    def _power(self):
        base = self._atom()
        if self._peek() in ("^", "**"):
            self._take()
            return ("bin", "^", base, self._unary())
        return base

    def _atom(self):
        kind, value, pos = self._take()
        if kind == "num":
            return ("num", float(value))
        if kind == "name":
            if self._peek() == "(":
                if value not in FUNCTIONS:
                    from graders.spec import did_you_mean
                    raise FormulaSyntaxError(f"unknown function '{value}'.{did_you_mean(value, FUNCTIONS)}",
                                             self.text, pos)
                self._take("(")
                args = [self._expr()]
                while self._peek() == ",":
                    self._take()
                    args.append(self._expr())
                self._take(")")
                _, lo, hi = FUNCTIONS[value]
                if len(args) < lo or hi is not None and len(args) > hi:
                    want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
                    raise FormulaSyntaxError(f"{value}() takes {want} argument(s), got {len(args)}",
                                             self.text, pos)
                return ("call", value, args)
            if self.names is not None and value not in self.names:
                from graders.spec import did_you_mean
                hint = did_you_mean(value, self.names) or f" Known graders: {', '.join(sorted(self.names))}."
                raise FormulaSyntaxError(f"'{value}' is not a grader in this multi.{hint}", self.text, pos)
            return ("var", value)
        if value == "(":
            node = self._expr()
            self._take(")")
            return node
        raise FormulaSyntaxError(f"unexpected '{value}'", self.text, pos)

    def _vars(self, node):
        if node[0] == "var":
            return {node[1]}
        if node[0] == "num":
            return set()
        children = node[1:] if node[0] == "neg" else node[2:] if node[0] == "bin" else node[2]
        out = set()
        for child in children:
            out |= self._vars(child)
        return out

    # -- evaluation
    def evaluate(self, values: dict[str, float]) -> float:
        try:
            result = float(self._eval(self.tree, values))
        except ZeroDivisionError:
            raise FormulaError(f"division by zero in {self.text!r}") from None
        except (ValueError, OverflowError, TypeError) as err:
            raise FormulaError(f"cannot compute {self.text!r}: {err}") from None
        if not math.isfinite(result):
            raise FormulaError(f"{self.text!r} gave {result}, not a finite number")
        return result

    def _eval(self, node, values):
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "var":
            if node[1] not in values:
                raise FormulaError(f"no score for '{node[1]}'")
            return float(values[node[1]])
        if kind == "neg":
            return -self._eval(node[1], values)
        if kind == "call":
            return FUNCTIONS[node[1]][0](*(self._eval(a, values) for a in node[2]))
        _, op, a, b = node
        x, y = self._eval(a, values), self._eval(b, values)
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y
        if x < 0 and y != int(y):
            raise ValueError(f"negative number {x:g} to a fractional power {y:g}")
        return x ** y
