"""The framework floor: a bare ASGI app served by uvicorn that answers every request with a fixed body.

    python bench/floor.py --port P

It reads the request body (like any real handler) and, for a JSON body whose prompt (top level or in
``payload``) is ``sleep N``, awaits ``asyncio.sleep(N)`` first -- the least any host can take for that turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json

BODY = b'{"session_id":"floor","status":"done","result":"ok","duration_ms":0}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


def sleep_seconds(raw: bytes) -> float:
    """``N`` for a JSON body whose prompt (top level or in ``payload``) is ``sleep N`` (at most 30), else 0."""
    if not raw.startswith(b"{") or b"sleep" not in raw:
        return 0.0
    try:
        data = json.loads(raw)
    except ValueError:
        return 0.0
    prompt = (data.get("payload") or data).get("prompt") or ""
    words = prompt.split()
    if len(words) == 2 and words[0] == "sleep":
        return min(float(words[1]), 30.0)
    return 0.0


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    seconds = sleep_seconds(b"".join(chunks))
    if seconds:
        await asyncio.sleep(seconds)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
