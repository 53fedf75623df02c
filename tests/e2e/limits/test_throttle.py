"""The limit primitives in-process: token buckets (local and Redis), counters, client addresses, config."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid

import pytest

from common.errors import ConfigError, RateLimited
from hosting.core.config import HostConfig, load_config
from hosting.core.throttle import (
    Caller,
    Counter,
    FailureWindow,
    LocalBuckets,
    Rate,
    RedisBuckets,
    Throttle,
    client_address,
    parse_networks,
)
from tests.conftest import MANAGE, free_port, host_env, redis_up

REDIS_URL = "redis://127.0.0.1:6379/13"


def test_bucket_admits_the_burst_then_refuses_with_the_wait():
    buckets, rate = LocalBuckets(), Rate(per_second=1.0, burst=3)
    assert [buckets.take("a", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a", rate)
    assert 0.5 < wait <= 1.0 and rate.retry_after(wait) == 1
    assert buckets.take("b", rate) == 0.0  # another key has its own bucket


def test_bucket_refills_at_the_rate():
    buckets, rate = LocalBuckets(), Rate(per_second=20.0, burst=1)
    assert buckets.take("a", rate) == 0.0
    assert buckets.take("a", rate) > 0
    deadline = time.monotonic() + 5
    while buckets.take("a", rate) > 0:  # a refused take costs nothing: poll until one token is back
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_retry_after_is_whole_seconds_and_at_least_one():
    rate = Rate(per_second=0.1, burst=1)
    assert [rate.retry_after(w) for w in (0.001, 1.0, 1.2, 9.99)] == [1, 1, 2, 10]


def test_counter_takes_every_cap_or_none():
    counter = Counter()
    first = counter.acquire([("id", 1), ("ip", 2)])
    assert first is not None
    assert counter.acquire([("id", 1), ("ip", 2)]) is None  # the identity is full
    assert counter.held("ip") == 1  # ... and the refusal took nothing from the address
    other = counter.acquire([("id2", 1), ("ip", 2)])
    assert other is not None and counter.acquire([("id3", 1), ("ip", 2)]) is None
    first()
    first()  # a second release is harmless
    assert counter.held("id") == 0 and counter.held("ip") == 1
    assert counter.acquire([("unlimited", 0)]) is not None


def test_throttle_caps_turns_per_identity_and_per_address(tmp_path):
    throttle = Throttle(HostConfig(project_dir=tmp_path, max_turns_per_identity=2, max_turns_per_ip=3))
    alice, bob = Caller.of("0xAA", "10.0.0.1"), Caller.of(None, "10.0.0.1")
    assert alice.identity == "0xaa" and bob.identity == "anon:10.0.0.1"
    held = [throttle.hold_turn(alice), throttle.hold_turn(alice)]
    with pytest.raises(RateLimited) as info:
        throttle.hold_turn(alice)
    assert (info.value.status, info.value.message, info.value.retry_after) == (429, "too many requests", 2)
    held.append(throttle.hold_turn(bob))
    with pytest.raises(RateLimited):
        throttle.hold_turn(Caller.of("0xcc", "10.0.0.1"))  # the address is full
    throttle.hold_turn(Caller.of("0xcc", "10.0.0.2"))
    throttle.hold_turn(Caller.of(None, None, anonymous="relay:x"))  # a relayed caller has no address cap
    held[0]()
    throttle.hold_turn(Caller.of("0xcc", "10.0.0.1"))


def test_zero_means_unlimited(tmp_path):
    throttle = Throttle(
        HostConfig(
            project_dir=tmp_path, rate_limit_per_minute=0, max_turns_per_identity=0, max_turns_per_ip=0, max_ws_per_ip=0
        )
    )
    caller = Caller.of(None, "10.0.0.9")
    for _ in range(500):
        throttle.hold_turn(caller)
    assert throttle.rate is None


def test_failure_window_counts_failures_only():
    window = FailureWindow(allowed=2, window=60)
    window.check("x")
    window.failed("x")
    window.failed("x")
    with pytest.raises(RateLimited) as info:
        window.check("x")
    assert 1 <= info.value.retry_after <= 60
    window.check("y")


@pytest.mark.parametrize(
    "peer, forwarded, trusted, expected",
    [
        ("203.0.113.5", "198.51.100.1", (), "203.0.113.5"),  # no trusted proxy: the header is ignored
        ("203.0.113.5", "198.51.100.1", ("10.0.0.0/8",), "203.0.113.5"),  # the peer is not a trusted proxy
        ("10.0.0.2", "198.51.100.1", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.3", ("10.0.0.0/8",), "198.51.100.1"),  # rightmost untrusted
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", ("10.0.0.0/8",), "10.0.0.4"),
        ("10.0.0.2", "junk, 198.51.100.1", ("10.0.0.2",), "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, junk", ("10.0.0.2",), "10.0.0.2"),  # unreadable chain: the proxy itself
        (None, None, (), "unknown"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, parse_networks(trusted)) == expected


def test_unreachable_redis_falls_back_to_per_process_buckets_with_one_warning(caplog):
    buckets = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", prefix="t:", timeout=0.3)
    rate = Rate(per_second=0.01, burst=2)
    with caplog.at_level(logging.WARNING, logger="connectonion.limits"):
        results = [buckets.take("a", rate) for _ in range(4)]
    assert results[:2] == [0.0, 0.0] and all(w > 0 for w in results[2:])  # never locked out, still limited
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.redis
def test_redis_buckets_are_shared_between_clients():
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379 (this test needs a real one)")
    prefix = f"connectonion:test:{uuid.uuid4().hex}:"
    one, two = RedisBuckets(REDIS_URL, prefix=prefix), RedisBuckets(REDIS_URL, prefix=prefix)
    try:
        rate = Rate(per_second=0.5, burst=4)
        taken = [(one if i % 2 else two).take("k", rate) for i in range(6)]
        assert taken[:4] == [0.0] * 4 and all(0 < w <= 2.0 for w in taken[4:])
        ttl = one._client.pttl(prefix + "k")
        assert 0 < ttl <= 9000  # forgotten once it would be full again
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("rate_limit_per_minute: -1\n", "host.yaml: rate_limit_per_minute must be at least 0 (got -1)"),
        ("rate_limit_burst: 0\n", "host.yaml: rate_limit_burst must be at least 1 (got 0)"),
        ("max_ws_per_ip: many\n", "host.yaml: max_ws_per_ip must be an integer (got 'many')"),
        ("max_turns_per_ip: 1.5\n", "host.yaml: max_turns_per_ip must be an integer (got 1.5)"),
        (
            "trusted_proxies: [10.0.0.1, proxy.local]\n",
            "host.yaml: trusted_proxies must list IP addresses or networks (got 'proxy.local')",
        ),
    ],
)
def test_bad_limit_settings_stop_the_start(tmp_path, yaml_text, message):
    (tmp_path / ".co").mkdir()
    (tmp_path / ".co/host.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config({"project_dir": tmp_path}, environ={})
    assert str(info.value) == message


def test_limit_defaults_and_host_yaml(tmp_path):
    cfg = load_config({"project_dir": tmp_path}, environ={})
    assert (
        cfg.rate_limit_per_minute,
        cfg.rate_limit_burst,
        cfg.max_turns_per_identity,
        cfg.max_turns_per_ip,
        cfg.max_ws_per_ip,
        cfg.trusted_proxies,
    ) == (60.0, 20, 8, 32, 256, ())
    (tmp_path / ".co").mkdir(exist_ok=True)
    (tmp_path / ".co/host.yaml").write_text("rate_limit_per_minute: 0\nmax_ws_per_ip: 4\ntrusted_proxies: 10.0.0.0/8\n")
    cfg = load_config({"project_dir": tmp_path, "max_ws_per_ip": 9}, environ={})
    assert (cfg.rate_limit_per_minute, cfg.max_ws_per_ip, cfg.trusted_proxies) == (0.0, 9, ("10.0.0.0/8",))


def test_runhost_refuses_a_negative_limit(tmp_path):
    run = subprocess.run(
        [sys.executable, str(MANAGE), "runhost", "--no-relay", "--max-turns-per-ip", "-1", "--port", str(free_port())],
        cwd=tmp_path,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "max_turns_per_ip must be at least 0 (got -1)" in run.stderr
