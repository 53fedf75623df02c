"""The WebSocket buffers' bounds (issue 15.4). A viewer's queue of live events is bounded in bytes as well as in events (issue 15.4): past the bound the
viewer is marked lagged and reads the rest from the event log, so a viewer that falls behind holds no memory."""

from __future__ import annotations

import pytest

from hosting.core.events import Hub


async def test_a_viewer_queue_counts_bytes_and_lags_past_its_budget():
    hub = Hub(max_queue_bytes=250_000)
    sub = hub.subscribe("s")
    big = {"type": "chunk", "text": "x" * 100_000}
    for _ in range(5):
        hub.publish("s", big)
    assert sub.queue.qsize() == 2 and sub.lagged  # two fit; the third would pass 250 kB
    assert 200_000 < sub.queued_bytes < 250_000
    await sub.get()
    await sub.get()
    assert sub.queued_bytes == 0
    sub.lagged = False
    hub.publish("s", big)
    assert sub.queue.qsize() == 1 and not sub.lagged


async def test_one_event_larger_than_the_budget_still_reaches_an_idle_viewer():
    hub = Hub(max_queue_bytes=1_000)
    sub = hub.subscribe("s")
    hub.publish("s", {"type": "chunk", "text": "x" * 5_000})
    assert (await sub.get())["text"] == "x" * 5_000 and not sub.lagged


def test_the_socket_limits_are_host_yaml_keys_and_flags(tmp_path):
    from common.errors import ConfigError
    from hosting.core.config import load_config
    from hosting.management.commands.runhost import Command

    cfg = load_config({"project_dir": tmp_path}, environ={})
    assert (cfg.ws_send_buffer_mb, cfg.ws_max_frames_per_second) == (16.0, 200.0)
    (tmp_path / ".co").mkdir(exist_ok=True)
    (tmp_path / ".co/host.yaml").write_text("ws_send_buffer_mb: 2.5\nws_max_frames_per_second: 0\n")
    cfg = load_config({"project_dir": tmp_path}, environ={})
    assert (cfg.ws_send_buffer_mb, cfg.ws_max_frames_per_second) == (2.5, 0.0)
    (tmp_path / ".co/host.yaml").write_text("ws_send_buffer_mb: -1\n")
    with pytest.raises(ConfigError, match="ws_send_buffer_mb must be at least 0"):
        load_config({"project_dir": tmp_path}, environ={})
    parser = Command().create_parser("manage.py", "runhost")
    opts = parser.parse_args(["--ws-send-buffer-mb", "4", "--ws-max-frames-per-second", "50"])
    assert (opts.ws_send_buffer_mb, opts.ws_max_frames_per_second) == (4.0, 50.0)
