"""Agent RFT tools (graders/tools.py): built from source without running it, called in the grader sandbox,
every failure returned as the tool's answer."""

from __future__ import annotations

import pytest

from graders.base import GraderConfigError
from graders.tool_examples import EXAMPLES
from graders.tools import ToolCallFailed, build_tool, build_tools


def _tool(body: str, name: str = "f", sig: str = "x: int", **spec):
    source = f"def {name}({sig}):\n    '''Do it.\n\n    Args:\n        x: a number\n    '''\n{body}\n"
    return build_tool({"name": name, "source": source, **spec})


def test_examples_build_with_their_schema_and_answer():
    calc = build_tool({"example": "calculator"})
    schema = calc.schema()["function"]
    assert schema["name"] == "calculator" and schema["parameters"]["required"] == ["expression"]
    assert "arithmetic" in schema["description"].lower()
    assert calc.call({"expression": "347+589"}).text == "936"
    assert calc.call({"expression": "(12*7)/3"}).text == "28"
    ev = build_tool({"example": "python_eval"})
    assert ev.call({"expression": "sum(range(10))"}).text == "45"
    assert set(EXAMPLES) == {"calculator", "table_lookup", "python_eval"}


def test_table_lookup_reads_the_uploaded_csv(tmp_path):
    (tmp_path / "prices.csv").write_text("item,price\napple,3\npear,5\n")
    tool = build_tool({"example": "table_lookup", "table": "prices.csv"}, str(tmp_path))
    assert tool.call({"key": "Pear", "column": "price"}).text == "5"
    assert tool.call({"key": "apple"}).text == "item: apple, price: 3"
    assert "no row" in tool.call({"key": "kiwi"}).text
    with pytest.raises(GraderConfigError, match="needs a CSV"):
        build_tool({"example": "table_lookup"})
    with pytest.raises(GraderConfigError, match="does not exist"):
        build_tool({"example": "table_lookup", "table": "gone.csv"}, str(tmp_path))


def test_a_tool_that_raises_hangs_or_returns_garbage_gives_an_answer_not_an_exception():
    boom = _tool("    raise ValueError('no such thing')", "boom")
    r = boom.call({"x": 1})
    assert r.text is None and "ValueError: no such thing" in r.error and "tool line" in r.error
    upgrader = _tool("    raise ValueError('the upgrader is down')", "upgrader")
    assert "the upgrader is down" in upgrader.call({"x": 1}).error  # the user's own words are kept
    hang = _tool("    while True:\n        pass", "hang", timeout_s=0.3)
    r = hang.call({"x": 1})
    assert r.text is None and "longer than 0.3 s" in r.error
    assert hang.call({"x": 2}).error  # the worker was replaced and the next call is answered too
    garbage = _tool("    return object()", "garbage")
    assert garbage.call({"x": 1}).text.startswith('"<object object')  # made text, the model reads it
    nums = _tool("    return {'double': x * 2}", "nums")
    assert nums.call({"x": 4}).text == '{"double": 8}'
    long = _tool("    return 'a' * 5000", "long", max_result_chars=100)
    assert long.call({"x": 1}).text.endswith("[cut at 100 characters]") and len(long.call({"x": 1}).text) < 140
    stats = boom.drain_stats()
    assert stats["calls"] == 1 and stats["errors"] == 1 and boom.drain_stats()["calls"] == 0


def test_bad_arguments_are_the_models_error_and_the_proxy_raises_for_trl():
    calc = build_tool({"example": "calculator"})
    r = calc.call({"expr": "1+1"})
    assert r.error.startswith("bad arguments for calculator") and "expression" in r.error
    assert calc.function(expression="2*21") == "42"
    with pytest.raises(ToolCallFailed, match="only numbers"):  # TRL turns this into {'error': ...} for the model
        calc.function(expression="__import__('os')")
    assert calc.function.__name__ == "calculator" and "expression" in str(calc.function.__signature__)


def test_no_network_in_a_tool():
    net = _tool("    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    return 'online'",
                "net")
    r = net.call({"x": 1})
    assert r.text != "online" and r.error


@pytest.mark.parametrize("source,needle", [
    ("def f(x):\n    '''Doc.\n\n    Args:\n        x: n\n    '''\n", "no type hint"),
    ("def f(x: int):\n    return x\n", "no docstring"),
    ("def f(x: int):\n    '''Doc without args.'''\n", "Describe every argument"),
    ("def f(x: os.PathLike):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "not supported; use str"),
    ("def f(*args: int):\n    '''D.\n\n    Args:\n        args: n\n    '''\n", "named arguments only"),
    ("def f(x: int = len('a')):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "not a plain value"),
    ("def f(x: int:\n", "Fix the Python syntax"),
    ("x = 1\n", "defines no function"),
    ("def f(x: str | 1):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "is not a type"),
    ("def f(x: int[0]):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "is not a type"),
    ("def f(x: dict = {[1]: 2}):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "not a plain value"),
    ("async def f(x: int):\n    '''D.\n\n    Args:\n        x: n\n    '''\n", "plain `def`"),
])
def test_broken_tools_are_refused_with_what_to_fix(source, needle):
    with pytest.raises(GraderConfigError, match=needle):
        build_tool({"source": source})


def test_spec_errors_name_the_field():
    with pytest.raises(GraderConfigError, match="exactly one of"):
        build_tool({"name": "x"})
    with pytest.raises(GraderConfigError, match="no example tool"):
        build_tool({"example": "weather"})
    with pytest.raises(GraderConfigError, match="field 'timeout'"):
        build_tool({"example": "calculator", "timeout": 3})
    with pytest.raises(GraderConfigError, match="named 'calculator'"):
        build_tools([{"example": "calculator"}, {"example": "calculator"}])
    with pytest.raises(GraderConfigError, match="timeout_s"):
        build_tool({"example": "calculator", "timeout_s": -1})


def test_annotations_are_checked_before_a_restricted_evaluation():
    # only names like str/int survive the check, so a hostile annotation is refused before any eval
    src = "def f(x: ().__class__):\n    '''D.\n\n    Args:\n        x: n\n    '''\n"
    with pytest.raises(GraderConfigError):
        build_tool({"source": src})
    ok = build_tool({"source": "def f(x: list[int], y: str | None = None):\n    '''D.\n\n    Args:\n"
                               "        x: numbers\n        y: a label\n    '''\n    return str(sum(x))\n"})
    assert ok.call({"x": [1, 2, 3]}).text == "6"
