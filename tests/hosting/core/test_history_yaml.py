"""The history file (``.co/sessions/<id>.yaml``) loads back to what the turn said, whichever writer wrote it:
the direct one for text turns, ``yaml.dump`` for the rest (issue 20)."""

from __future__ import annotations

import yaml

from hosting.core.activity import write_session_yaml

TRICKY = [
    "hi",
    "",
    " leading and trailing ",
    "a: b # not a comment",
    "- not a list",
    "null",
    "true",
    "1.5",
    "'single' \"double\" \\backslash",
    "line\nbreak\ttab\rreturn",
    "\x00\x01\x1b\x7f",
    "\x80\x85\x9f\xa0",
    "\u2028\u2029\ufeff\ufffd\ufffe\uffff",
    "é ü 漢字 😀",
]


def _written(tmp_path, messages, **session):
    path = write_session_yaml(
        tmp_path, name="agent: x", session_id="s-1", session={"messages": messages, **session}, created=1.0
    )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_text_turns_load_back_exactly(tmp_path):
    messages = [{"role": "user" if i % 2 else "assistant", "content": text} for i, text in enumerate(TRICKY)]
    document = _written(tmp_path, messages, total_cost=0.25, total_tokens=7)
    assert document["name"] == "agent: x"
    assert document["turns"] == [{"role": m["role"], "content": m["content"]} for m in messages]
    assert (document["total_cost"], document["total_tokens"]) == (0.25, 7)
    assert document["created"] == "1970-01-01T00:00:01+00:00"


def test_what_the_direct_writer_leaves_to_yaml_dump_loads_back_too(tmp_path):
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    document = _written(tmp_path, [{"role": "user", "content": parts}], total_cost=1e-05)
    assert document["turns"] == [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": "[image]"}]}
    ]
    assert document["total_cost"] == 1e-05
    assert _written(tmp_path, [])["turns"] == []
