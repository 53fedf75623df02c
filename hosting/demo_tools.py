"""The demo agent's tools: plain functions with docstrings, as a released connectonion agent's tools are (their
names and arguments appear in the turn's trace)."""

from __future__ import annotations

import ast
import datetime as dt
import operator
import re
from pathlib import Path

WORDS = {
    "spanish": {"hello": "hola", "goodbye": "adiós", "thanks": "gracias", "cat": "gato", "water": "agua"},
    "french": {"hello": "bonjour", "goodbye": "au revoir", "thanks": "merci", "cat": "chat", "water": "eau"},
    "german": {"hello": "hallo", "goodbye": "auf Wiedersehen", "thanks": "danke", "cat": "Katze", "water": "Wasser"},
}

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression such as ``(2+3)*7``."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError("only numbers and + - * / // % ** are allowed")

    if len(expression) > 200:
        raise ValueError("expression too long")
    value = ev(ast.parse(expression, mode="eval"))
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def current_time() -> str:
    """The current UTC date and time."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def translate(text: str, language: str) -> str:
    """Translate a common word into Spanish, French or German."""
    table = WORDS.get(language.lower())
    if table is None:
        raise ValueError(f"I only know {', '.join(sorted(WORDS))}")
    return table.get(text.lower().strip(" .!?"), f"(I don't know '{text}' in {language})")


def read_file(path: str) -> str:
    """Read an uploaded file (text, or a summary of a binary file)."""
    p = Path(path)
    data = p.read_bytes()[:65536]
    if data.startswith(b"%PDF"):
        texts = re.findall(rb"\(([^()]{3,200})\)\s*Tj", data)
        body = " ".join(t.decode("latin-1") for t in texts) or "(no extractable text)"
        return f"PDF document, {p.stat().st_size} bytes. Text: {body[:500]}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary file, {p.stat().st_size} bytes"
    return text[:2000]


def save_note(text: str) -> str:
    """Save a note (needs the user's approval)."""
    return f"note saved: {text}"
