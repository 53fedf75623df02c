"""The built-in demo agent: no API key, no network, and it shows off what the host can do.

It follows the released connectonion conventions (``input(prompt, session=, images=)``,
``current_session``, ``io``), so every host feature works with it: real tool calls in the trace,
streamed events, ``ask_user`` questions, an approval-gated tool, file reading, images, memory.
Its "model" is a handful of rules; say ``help`` to it to see them.
"""

from __future__ import annotations

import re
import struct
import time
import uuid
from pathlib import Path
from typing import Any

from hosting.core.events import NO_APPROVER
from hosting.demo_tools import calculate, current_time, read_file, save_note, translate

SYSTEM_PROMPT = (
    "I am the ConnectOnion demo agent. I calculate, tell the time, translate a few words, read "
    "uploaded files, remember your name, ask you questions and save notes (with your approval)."
)

HELP = (
    "Try: 'calculate (2+3)*7', 'what time is it', 'translate hello to spanish', "
    "'my name is Ada' then 'what is my name', 'quiz me', 'save a note: buy milk' (asks approval), "
    "'count to 5 slowly', 'count slowly until I say stop' (then steer it while it counts: 'count by 10', "
    "'faster', 'stop'), or attach a file and say 'read the file'."
)

STEERED_STEPS = 120  # 'count slowly until I say stop' gives up after this many numbers (a minute at 0.5 s)


class DemoAgent:
    """A rule-based agent with real tools. One instance per turn (use ``create_agent``)."""

    tool_functions = (calculate, current_time, translate, read_file, save_note)
    needs_approval = frozenset({"save_note"})

    def __init__(self, *, step_delay: float = 0.0) -> None:
        self.name = "demo"
        self.model = "demo/rules"
        self.system_prompt = SYSTEM_PROMPT
        self.tools = [f.__name__ for f in self.tool_functions] + ["ask_user"]
        self.current_session: dict[str, Any] | None = None
        self.io: Any = None
        self.step_delay = step_delay
        self._iteration = 0

    # -- the released Agent's entry point ------------------------------------------------------------
    def input(self, prompt: str, session: dict[str, Any] | None = None, images: list[str] | None = None) -> str:
        s = dict(session or {})
        s.setdefault("session_id", str(uuid.uuid4()))
        s["messages"] = list(s.get("messages") or [{"role": "system", "content": SYSTEM_PROMPT}])
        s["trace"] = list(s.get("trace") or [])
        s["turn"] = int(s.get("turn") or 0) + 1
        self.current_session = s
        self._iteration = 0
        user_content: Any = prompt
        if images:
            user_content = [{"type": "text", "text": prompt}] + [
                {"type": "image_url", "image_url": {"url": i}} for i in images
            ]
        s["messages"].append({"role": "user", "content": user_content})
        self._record({"type": "user_input", "content": prompt, "turn": s["turn"]})
        answer = self._respond(prompt, images or [])
        self._think(0)
        s["messages"].append({"role": "assistant", "content": answer})
        s["result"] = answer
        s["user_prompt"] = prompt
        s["iteration"] = self._iteration
        s["updated"] = time.time()
        return answer

    # -- the "model" ---------------------------------------------------------------------------------
    def _respond(self, prompt: str, images: list[str]) -> str:
        text = prompt.strip()
        low = text.lower()
        parts: list[str] = []
        if images:
            parts.append(self._describe_images(images))
        if re.search(r"until i say stop", low):
            parts.append(self._count_until_stopped())
        elif m := re.search(r"count to (\d+)", low):
            n = min(int(m.group(1)), 50)
            delay = 0.5 if "slow" in low else 0.0
            for i in range(1, n + 1):
                self._think(1)
                self._tool("calculate", calculate, expression=f"{i - 1}+1")
                if delay:
                    time.sleep(delay)
            parts.append(", ".join(str(i) for i in range(1, n + 1)))
        elif m := re.search(r"(?:calculate|compute|what is)\s+([-+*/%().\d\s]+\d[)\s]*)", low):
            self._think(1)
            value = self._tool("calculate", calculate, expression=m.group(1).strip())
            parts.append(f"{m.group(1).strip()} = {value}")
        elif re.search(r"\b(time|date|clock)\b", low):
            self._think(1)
            parts.append(f"It is {self._tool('current_time', current_time)}.")
        elif m := re.search(r"translate\s+['\"]?([\w ]+?)['\"]?\s+(?:to|into)\s+(\w+)", low):
            self._think(1)
            word = self._tool("translate", translate, text=m.group(1), language=m.group(2))
            parts.append(f"'{m.group(1)}' in {m.group(2).capitalize()} is '{word}'.")
        elif m := re.search(r"my name is\s+([\w' -]{1,40})", text, re.I):
            name = m.group(1).strip().rstrip(".!")
            parts.append(f"Nice to meet you, {name}!")
        elif re.search(r"what(?:'s| is) my name", low):
            name = self._remembered_name()
            parts.append(f"Your name is {name}." if name else "You haven't told me your name yet.")
        elif re.search(r"\b(quiz|ask me)\b", low):
            parts.append(self._quiz())
        elif m := re.search(r"(?:save|write|keep) (?:a )?note:?\s*(.+)", text, re.I):
            parts.append(self._save_note(m.group(1).strip()))
        elif re.search(r"\b(read|summari[sz]e|open)\b.*\b(file|document|pdf|upload)", low) or self._uploaded_paths():
            parts.append(self._read_uploads())
        elif re.search(r"\b(fail|crash|raise)\b", low) and "please" in low:
            raise RuntimeError("the demo agent was asked to fail")
        elif (low in ("help", "?", "what can you do", "what can you do?") or not parts) and not images:
            parts.append(f"You said: {text}" if low not in ("help", "?") else "")
            parts.append(HELP)
        return " ".join(p for p in parts if p)

    def _count_until_stopped(self) -> str:
        """Count one number per step and read the user's runtime input between steps (issue 17.7b).

        Steering: 'stop' ends the count, 'count by N' changes the step, 'faster'/'slower' the pace; anything
        else is noted and answered in the result. The window opens here and closes with the final drain, so
        every input the host acknowledged is read.
        """
        opener = getattr(self.io, "open_runtime_inputs", None)
        if opener is not None:
            opener()
        numbers: list[int] = []
        steer = {"by": 1, "delay": 0.5, "stop": None, "notes": []}
        while len(numbers) < STEERED_STEPS:
            self._apply_steering(self._take_runtime_inputs(final=False), steer)
            if steer["stop"] is not None:
                break
            current = numbers[-1] if numbers else 0
            self._think(1)
            self._tool("calculate", calculate, expression=f"{current}+{steer['by']}")
            numbers.append(current + steer["by"])
            time.sleep(steer["delay"])
        self._apply_steering(self._take_runtime_inputs(final=True), steer)
        text = ", ".join(str(n) for n in numbers) or "(nothing counted)"
        if steer["stop"] is not None:
            text += f". Stopped because you said '{steer['stop']}'."
        else:
            text += f". Reached {STEERED_STEPS} numbers without a 'stop'."
        if steer["notes"]:
            text += " You also said: " + "; ".join(f"'{n}'" for n in steer["notes"]) + "."
        return text

    def _take_runtime_inputs(self, *, final: bool) -> list[str]:
        """The prompts sent while this turn runs; each goes into the conversation and the trace."""
        take = getattr(self.io, "finish_runtime_inputs" if final else "pop_runtime_inputs", None)
        prompts = [m.get("prompt") for m in (take() if take is not None else [])]
        assert self.current_session is not None
        for prompt in (p for p in prompts if isinstance(p, str) and p):
            self.current_session["messages"].append({"role": "user", "content": prompt})
            self._record(
                {"type": "user_input", "content": prompt, "turn": self.current_session["turn"], "runtime_input": True}
            )
        return [p for p in prompts if isinstance(p, str) and p]

    @staticmethod
    def _apply_steering(prompts: list[str], steer: dict[str, Any]) -> None:
        for prompt in prompts:
            low = prompt.lower()
            if re.search(r"\bstop\b", low):
                steer["stop"] = steer["stop"] or prompt
            elif m := re.search(r"\bby (\d+)", low):
                steer["by"] = max(1, min(int(m.group(1)), 1000))
            elif "faster" in low:
                steer["delay"] = max(steer["delay"] / 2, 0.05)
            elif "slower" in low:
                steer["delay"] = min(steer["delay"] * 2, 2.0)
            else:
                steer["notes"].append(prompt)

    def _describe_images(self, images: list[str]) -> str:
        import base64

        descriptions = []
        for i, url in enumerate(images):
            raw = base64.b64decode(url.split(",", 1)[-1] + "==")[:32]
            if raw.startswith(b"\x89PNG") and len(raw) >= 24:
                w, h = struct.unpack(">II", raw[16:24])
                descriptions.append(f"image {i + 1}: a {w}x{h} PNG")
            elif raw.startswith(b"\xff\xd8"):
                descriptions.append(f"image {i + 1}: a JPEG")
            else:
                descriptions.append(f"image {i + 1}")
        return f"I received {len(images)} image(s): " + "; ".join(descriptions) + "."

    def _remembered_name(self) -> str | None:
        for message in reversed((self.current_session or {}).get("messages", [])):
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, str):
                continue
            if m := re.search(r"my name is\s+([\w' -]{1,40})", content, re.I):
                return m.group(1).strip().rstrip(".!")
        return None

    def _uploaded_paths(self) -> list[str]:
        paths: list[str] = []
        for message in (self.current_session or {}).get("messages", []):
            content = message.get("content")
            if message.get("internal") and isinstance(content, str) and "<system-reminder>" in content:
                paths.extend(re.findall(r"^- (\S.*)$", content, re.M))  # relative to our folder, or absolute
        return paths

    def _read_uploads(self) -> str:
        paths = self._uploaded_paths()
        if not paths:
            return "There is no uploaded file to read; attach one and ask again."
        self._think(1)
        summaries = [f"{Path(p).name}: {self._tool('read_file', read_file, path=p)[:300]}" for p in paths[-3:]]
        return "I read " + "; ".join(summaries)

    def _quiz(self) -> str:
        self._think(1)
        answer = self._ask("What is the capital of France?", ["Paris", "Lyon", "Marseille"])
        if answer is None:
            return "Nobody is here to answer my question (ask me over the WebSocket)."
        return "Correct!" if str(answer).strip().lower() == "paris" else f"Not quite: it is Paris, not {answer}."

    def _save_note(self, note: str) -> str:
        self._think(1)
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        reply = self._approve("save_note", {"text": note}, call_id)
        if reply.get("approved") is not True:
            # The host's own refusal (an HTTP turn has nobody to ask) says so: nobody rejected anything.
            nobody = reply.get("feedback") == NO_APPROVER
            why = NO_APPROVER if nobody else "rejected by the user"
            self._record(
                {
                    "type": "tool_result",
                    "tool_id": call_id,
                    "name": "save_note",
                    "args": {"text": note},
                    "status": "failed",
                    "result": why,
                    "timing_ms": 0,
                    "error": why,
                }
            )
            return "OK, I did not save the note." + (f" ({NO_APPROVER})" if nobody else "")
        return "Done: " + self._tool("save_note", save_note, call_id=call_id, text=note) + "."

    # -- io plumbing (the released Agent's conventions) ----------------------------------------------
    def _record(self, event: dict[str, Any]) -> None:
        event.setdefault("ts", time.time())
        assert self.current_session is not None
        self.current_session["trace"].append(event)
        if self.io is not None:
            self.io.send(dict(event))

    def _think(self, tool_calls: int) -> None:
        self._iteration += 1
        call_id = str(uuid.uuid4())
        if self.io is not None:
            self.io.send(
                {
                    "type": "llm_call",
                    "id": call_id,
                    "model": self.model,
                    "iteration": self._iteration,
                    "status": "running",
                }
            )
        if self.step_delay:
            time.sleep(self.step_delay)
        self._record(
            {
                "type": "llm_result",
                "id": call_id,
                "model": self.model,
                "iteration": self._iteration,
                "duration_ms": 0,
                "tool_calls_count": tool_calls,
                "usage": None,
                "status": "success",
            }
        )

    def _tool(self, name: str, fn: Any, *, call_id: str | None = None, **args: Any) -> str:
        call_id = call_id or f"call_{uuid.uuid4().hex[:12]}"
        if self.io is not None:
            self.io.send({"type": "tool_call", "tool_id": call_id, "name": name, "args": args, "status": "in_progress"})
        started = time.perf_counter()
        try:
            result, status, error = str(fn(**args)), "completed", None
        except Exception as exc:  # noqa: BLE001 - a tool error goes back to the "model", as in the released Agent
            result, status, error = f"Error: {exc}", "failed", str(exc)
        timing = round((time.perf_counter() - started) * 1000, 3)
        event = {
            "type": "tool_result",
            "tool_id": call_id,
            "name": name,
            "args": args,
            "status": status,
            "result": result,
            "timing_ms": timing,
        }
        if error:
            event["error"] = error
        assert self.current_session is not None
        self.current_session["messages"].append({"role": "tool", "content": result, "tool_call_id": call_id})
        self._record(event)
        return result

    def _ask(self, question: str, options: list[str]) -> Any:
        if self.io is None:
            return None
        self.io.send({"type": "ask_user", "question": question, "options": options, "multi_select": False})
        reply = self.io.receive()
        if reply.get("type") == "INTERRUPT":
            return None
        return reply.get("answer")

    def _approve(self, tool: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
        """The client's APPROVAL_RESPONSE (``approved``, ``feedback``), or a refusal when there is no io."""
        if self.io is None:
            return {"approved": False, "feedback": "no client to approve it"}
        self.io.send(
            {
                "type": "approval_needed",
                "tool_call_id": call_id,
                "tool": tool,
                "arguments": arguments,
                "description": f"{tool} wants to run",
            }
        )
        return self.io.receive()


def create_agent() -> DemoAgent:
    """The factory ``runhost`` uses when no agent is named."""
    return DemoAgent()
