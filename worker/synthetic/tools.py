"""The real tools of the synthetic shop task: `lookup` (unit prices) and `calculator` (arithmetic).

`execute(name, arguments)` runs a tool and always returns the observation text: a bad call (unknown
tool or item, malformed arguments, an expression that is not plain arithmetic, division by zero) is
an observation starting with "Error: ", never an exception, so an agent can read it and recover.
The calculator walks the expression's `ast` and allows only numbers, + - * /, unary signs and
parentheses; nothing is ever passed to `eval`. `TOOL_SCHEMAS` are the OpenAI JSON-schema
definitions of both tools (kept short: a chat template may render them into every prompt).
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Callable
from typing import Any

from worker.synthetic.tasks import PRICES, format_number

MAX_EXPRESSION_CHARS = 200
MAX_DEPTH = 32

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Unit price of an item.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string"}},
                "required": ["item"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic (+ - * / and parentheses).",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
]


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval(node: ast.AST, depth: int) -> float:
    if depth > MAX_DEPTH:
        raise CalculatorError("expression is nested too deeply")
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Div) and right == 0:
            raise CalculatorError("division by zero")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    raise CalculatorError(f"unsupported expression element {type(node).__name__}")


def calculate(expression: str) -> float:
    """Evaluate plain arithmetic; raise `CalculatorError` for anything else."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError("invalid syntax") from exc
    return _eval(tree.body, 0)


def lookup(item: str) -> str:
    key = item.strip().lower()
    if key not in PRICES:
        return f"Error: unknown item '{item}'"
    return format_number(PRICES[key])


def calculator(expression: str) -> str:
    try:
        return format_number(calculate(expression))
    except CalculatorError as exc:
        return f"Error: {exc}"


_TOOLS: dict[str, tuple[str, Callable[[str], str]]] = {
    "lookup": ("item", lookup),
    "calculator": ("expression", calculator),
}
TOOL_NAMES: tuple[str, ...] = tuple(_TOOLS)


def execute(name: str, arguments: dict[str, Any] | str | None) -> str:
    """Run tool `name` and return its observation text (errors included, as "Error: …").

    `arguments` is a JSON object (dict), or a string: a JSON object's text, or else the bare value
    of the tool's single parameter (ReAct agents often write `Action Input: apple`).
    """
    if name not in _TOOLS:
        return f"Error: unknown tool '{name}'"
    param, fn = _TOOLS[name]
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except ValueError:
            decoded = arguments.strip()
        if isinstance(decoded, dict):
            arguments = decoded
        else:
            arguments = {param: decoded if isinstance(decoded, str) else arguments.strip()}
    if not isinstance(arguments, dict) or not isinstance(arguments.get(param), str):
        return f'Error: {name} needs {{"{param}": <string>}}'
    extra = sorted(set(arguments) - {param})
    if extra:
        return f"Error: unexpected argument '{extra[0]}' for {name}"
    return fn(arguments[param])
