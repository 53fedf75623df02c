"""The gate's decision flow (PROTOCOL §7.3, §2.4, D3-D5, D20; HARDENING S9, S10, S13, S15, S18)."""

from __future__ import annotations

import logging
import time

import pytest
from nacl.signing import SigningKey

from trust.audit import record_decision
from trust.decision import TrustSettings
from trust.gate import Gate
from trust.identity import address_of
from trust.judges import HttpJudge
from trust.ledger import DatabaseLedger, MemoryLedger
from trust.lists import AccessLists
from trust.policy import build_policy
from trust.signing import sign_command, sign_headers, sign_payload

from .conftest import NOW, envelope, raises_exactly

STRANGER = SigningKey(bytes([11]) * 32)
FRIEND = SigningKey(bytes([12]) * 32)
ENEMY = SigningKey(bytes([13]) * 32)


def addr(key: SigningKey) -> str:
    return address_of(key.verify_key)


class CountingAgent:
    """A custom trust agent that counts how often it is asked."""

    def __init__(self, answer='{"decision": "ACCEPT", "reason": "fine"}'):
        self.answer = answer
        self.calls = 0

    def input(self, text):
        self.calls += 1
        return self.answer


@pytest.fixture
def build(make_config, host_identity):
    def make(
        trust="careful",
        *,
        ledger=None,
        policy=None,
        recorder=None,
        use_database=False,
        clock=lambda: NOW,
        **config_kw,
    ) -> Gate:
        config = make_config(trust=trust if isinstance(trust, str) else "custom policy", **config_kw)
        lists = AccessLists(config, host_identity, use_database=use_database)
        policy = policy or build_policy(trust, project_dir=config.project_dir)
        return Gate(
            config, host_identity, lists, ledger or MemoryLedger(clock=clock), policy, recorder=recorder, clock=clock
        )

    return make


def body_for(key, gate, **fields):
    return envelope(key, gate.our_address, **fields)


# --- blacklist first ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["open", "careful", "strict"])
def test_s13_blacklisted_from_with_garbage_signature_is_403_before_crypto(build, trust):
    gate = build(trust, blacklist=(addr(ENEMY),))
    body = {"payload": {"prompt": "x"}, "from": addr(ENEMY), "signature": "not hex at all"}
    raises_exactly(lambda: gate.admit(body), 403, "forbidden: blacklisted")


def test_s13_blacklisted_unsigned_from_is_403(build):
    gate = build("open", blacklist=(addr(ENEMY).upper().replace("0X", "0x"),))
    raises_exactly(lambda: gate.admit({"prompt": "x"}, unsigned_from=addr(ENEMY)), 403, "forbidden: blacklisted")


def test_blacklisted_valid_signer_is_403(build):
    gate = build("open", blacklist=(addr(ENEMY),))
    raises_exactly(lambda: gate.admit(body_for(ENEMY, gate)), 403, "forbidden: blacklisted")


# --- levels -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["open", "careful"])
def test_unsigned_is_anonymous_at_open_and_careful(build, trust):
    admission = build(trust).admit({"prompt": "hi", "session": {}})
    assert (admission.signer, admission.signed, admission.level, admission.trust) == (
        None,
        False,
        "stranger",
        trust,
    )
    assert admission.payload == {"prompt": "hi", "session": {}}


def test_careful_logs_signature_recommended_for_unsigned(build, caplog):
    with caplog.at_level(logging.INFO, logger="connectonion.trust"):
        build("careful").admit({"prompt": "hi"})
    assert "signature recommended" in caplog.text


def test_s15_unsigned_at_strict_is_401(build):
    raises_exactly(lambda: build("strict").admit({"prompt": "hi"}), 401, "unauthorized: signed request required")


@pytest.mark.parametrize("trust", ["open", "careful", "strict"])
def test_signed_stranger_is_admitted_at_every_level(build, trust):
    gate = build(trust)
    admission = gate.admit(body_for(STRANGER, gate, prompt="hi"))
    assert (admission.signer, admission.signed, admission.level) == (addr(STRANGER), True, "stranger")


def test_strict_requires_whitelist_refuses_strangers(build):
    gate = build("strict", strict_requires_whitelist=True, whitelist=(addr(FRIEND),))
    raises_exactly(lambda: gate.admit(body_for(STRANGER, gate)), 403, "forbidden: not on this agent's whitelist")
    assert gate.admit(body_for(FRIEND, gate)).reason == "whitelisted"


def test_strict_requires_whitelist_admits_admins_and_ourselves(build, host_identity):
    gate = build("strict", strict_requires_whitelist=True)
    (gate.lists.patterns("admin"))  # no admins file yet
    assert gate.admit(envelope(host_identity.signing_key, gate.our_address)).reason == "admin"


@pytest.mark.parametrize("trust", ["open", "careful", "strict"])
def test_s18_invalid_signature_from_whitelisted_address_is_401(build, trust):
    gate = build(trust, whitelist=(addr(FRIEND),))
    body = body_for(STRANGER, gate)
    body["from"] = addr(FRIEND)
    raises_exactly(lambda: gate.admit(body), 401, "unauthorized: invalid signature")


def test_admission_payload_is_the_signed_one_not_the_top_level(build):
    gate = build("careful")
    body = {**body_for(STRANGER, gate, prompt="signed"), "prompt": "unsigned copy"}
    admission = gate.admit(body)
    assert admission.payload["prompt"] == "signed"


def test_signed_request_errors_pass_through(build):
    gate = build("open")
    body = body_for(STRANGER, gate)
    del body["signature"]
    raises_exactly(lambda: gate.admit(body), 401, "unauthorized: signed request required")
    raises_exactly(lambda: gate.admit(envelope(STRANGER, None)), 401, "unauthorized: wrong recipient")
    assert gate.admit(envelope(STRANGER, None), require_to=False).signer == addr(STRANGER)


# --- ledger -------------------------------------------------------------------------------------------


def test_s9_identical_signed_body_twice_is_a_replay(build):
    gate = build("careful")
    body = body_for(STRANGER, gate, prompt="hi")
    gate.admit(body)
    raises_exactly(lambda: gate.admit(body), 401, "unauthorized: this CONNECT was already used")


def test_s9_replay_across_gates_sharing_a_database_ledger(build, db):
    # Real time here: the database ledger prunes rows by the wall clock.
    first = build("careful", ledger=DatabaseLedger(), clock=time.time)
    second = build("careful", ledger=DatabaseLedger(), clock=time.time)
    body = body_for(STRANGER, first, timestamp=time.time())
    first.admit(body)
    raises_exactly(lambda: second.admit(body), 401, "unauthorized: this CONNECT was already used")


@pytest.mark.parametrize("respell", [lambda s: "0x" + s, str.upper, lambda s: "0x" + s.upper()])
def test_s10_respelled_signature_is_still_a_replay(build, respell):
    gate = build("careful")
    body = body_for(STRANGER, gate)
    gate.admit(body)
    raises_exactly(
        lambda: gate.admit({**body, "signature": respell(body["signature"])}),
        401,
        "unauthorized: this CONNECT was already used",
    )


def test_replay_message_is_the_callers(build):
    gate = build("careful")
    body = body_for(STRANGER, gate)
    gate.admit(body)
    raises_exactly(
        lambda: gate.admit(body, replay_message="unauthorized: signature already used"),
        401,
        "unauthorized: signature already used",
    )


def test_allow_repeat_marks_the_admission_repeated(build):
    gate = build("careful")
    body = body_for(STRANGER, gate)
    assert gate.admit(body, allow_repeat=True).repeated is False
    assert gate.admit(body, allow_repeat=True).repeated is True


def test_whitelisted_replay_is_still_refused(build):
    gate = build("careful", whitelist=(addr(FRIEND),))
    body = body_for(FRIEND, gate)
    gate.admit(body)
    raises_exactly(lambda: gate.admit(body), 401, "unauthorized: this CONNECT was already used")


def test_an_unverified_request_never_reaches_the_ledger(build):
    gate = build("careful")
    body = body_for(STRANGER, gate)
    tampered = {**body, "payload": {**body["payload"], "prompt": "x"}}
    raises_exactly(lambda: gate.admit(tampered), 401, "unauthorized: invalid signature")
    assert gate.admit(body).signer == addr(STRANGER)


# --- D20 handshakes -----------------------------------------------------------------------------------


def handshake(key, gate, **payload):
    return {"type": "CONNECT", **envelope(key, gate.our_address, **payload)}


@pytest.mark.parametrize("trust", ["careful", "strict"])
def test_d20_repeated_handshake_with_signed_commands_is_accepted(build, trust):
    gate = build(trust)
    frame = handshake(STRANGER, gate, signed_commands=1)
    first = gate.admit_handshake(frame)
    assert (first.repeated, first.unproven) == (False, False)
    again = gate.admit_handshake(frame)
    assert again.repeated is True and again.signer == addr(STRANGER)
    assert again.unproven is True  # amended D20: it shows nothing until a signed command proves the sender


def test_d20_repeated_v1_handshake_is_downgraded_at_careful(build):
    gate = build("careful")
    frame = handshake(STRANGER, gate)
    gate.admit_handshake(frame)
    again = gate.admit_handshake(frame)
    assert (again.signer, again.signed, again.repeated) == (None, False, True)


def test_d20_repeated_v1_handshake_is_refused_at_strict(build):
    gate = build("strict")
    frame = handshake(STRANGER, gate)
    gate.admit_handshake(frame)
    raises_exactly(lambda: gate.admit_handshake(frame), 401, "unauthorized: this CONNECT was already used")


def test_unsigned_handshake(build):
    assert build("careful").admit_handshake({"type": "INIT"}).signer is None
    raises_exactly(
        lambda: build("strict").admit_handshake({"type": "INIT"}),
        401,
        "unauthorized: signed request required",
    )


# --- policies -----------------------------------------------------------------------------------------


def test_whitelisted_signer_bypasses_the_policy(build):
    agent = CountingAgent('{"decision": "REJECT", "reason": "no"}')
    gate = build(agent, whitelist=(addr(FRIEND),))
    assert gate.admit(body_for(FRIEND, gate, prompt="hi")).reason == "whitelisted"
    assert agent.calls == 0
    raises_exactly(lambda: gate.admit(body_for(STRANGER, gate)), 403, "forbidden: no")
    assert agent.calls == 1


def test_policy_sees_unsigned_callers_as_anonymous(build):
    agent = CountingAgent()
    gate = build(agent)
    admission = gate.admit({"prompt": "hi"})
    assert admission.signer is None and admission.trust == "custom" and agent.calls == 1


def test_policy_accept_and_reject_through_a_local_model_server(build, fake_model, tmp_path):
    settings = TrustSettings(base_url=fake_model.url, timeout=2)
    policy = build_policy("Admit researchers only.", project_dir=tmp_path, settings=settings, judge=HttpJudge(settings))
    gate = build("Admit researchers only.", policy=policy)
    assert gate.admit(body_for(STRANGER, gate, prompt="I study bees")).reason == "policy (model): looks fine"
    fake_model.reply = '{"decision": "REJECT", "reason": "not a researcher"}'
    raises_exactly(lambda: gate.admit(body_for(FRIEND, gate, prompt="hi")), 403, "forbidden: not a researcher")
    fake_model.reply = "¯\\_(ツ)_/¯"
    raises_exactly(lambda: gate.admit({"prompt": "hi"}), 503, "misconfigured: trust agent unavailable")
    prompts = [r["body"]["messages"][-1]["content"] for r in fake_model.requests]
    assert '"I study bees"' in prompts[0] and '"identity": "anonymous"' in prompts[2]


def test_policy_timeout_is_503_and_nothing_is_admitted(build, fake_model, tmp_path):
    fake_model.delay = 1.0
    settings = TrustSettings(base_url=fake_model.url, timeout=0.2)
    policy = build_policy("Admit friends.", project_dir=tmp_path, settings=settings, judge=HttpJudge(settings))
    gate = build("Admit friends.", policy=policy)
    raises_exactly(lambda: gate.admit(body_for(STRANGER, gate)), 503, "misconfigured: trust agent unavailable")


def test_prompt_argument_is_used_when_the_payload_has_none(build):
    seen = []

    class Recorder:
        def input(self, text):
            seen.append(text)
            return "ACCEPT"

    gate = build(Recorder())
    gate.admit(body_for(STRANGER, gate), prompt="from the frame")
    assert '"from the frame"' in seen[0]


def test_onboard_methods_come_from_the_policy(build, tmp_path):
    policy = build_policy(
        "---\nonboard:\n  invite_code: [$C]\n---\nx",
        project_dir=tmp_path,
        settings=TrustSettings(variables={"C": "k"}),
    )
    assert build("x", policy=policy).onboard_methods == ("invite_code",)
    assert build("careful").onboard_methods == ()


# --- signed reads, admin requests, commands ----------------------------------------------------------------


def read(gate, headers, *, path="/sessions", admin=False, legacy_ok=False):
    return gate.admit_headers(
        method="GET", path=path, query_string="", body=b"", headers=headers, admin=admin, legacy_ok=legacy_ok
    )


def signed_read(key, gate, *, path="/sessions", rid="r1"):
    return sign_headers(
        key,
        method="GET",
        path=path,
        query="",
        body=b"",
        to=gate.our_address,
        timestamp=int(NOW),
        request_id=rid,
    )


def test_reads_without_signature_are_anonymous_except_at_strict(build):
    assert read(build("careful"), {}).signer is None
    raises_exactly(lambda: read(build("strict"), {}), 401, "unauthorized: signed request required")


def test_signed_read_then_replay(build):
    gate = build("strict")
    headers = signed_read(STRANGER, gate)
    assert read(gate, headers).signer == addr(STRANGER)
    raises_exactly(lambda: read(gate, headers), 401, "unauthorized: signature already used")
    assert read(gate, signed_read(STRANGER, gate, rid="r2")).signer == addr(STRANGER)


def test_signed_read_is_bound_to_its_path(build):
    gate = build("careful")
    headers = signed_read(STRANGER, gate, path="/sessions")
    raises_exactly(lambda: read(gate, headers, path="/sessions/x"), 401, "unauthorized: invalid signature")


def test_blacklisted_reader_is_403(build):
    gate = build("careful", blacklist=(addr(ENEMY),))
    raises_exactly(lambda: read(gate, {"X-Co-From": addr(ENEMY)}), 403, "forbidden: blacklisted")


def test_admin_reads(build, host_identity):
    gate = build("careful")
    raises_exactly(lambda: read(gate, {}, admin=True), 401, "unauthorized")
    raises_exactly(lambda: read(gate, signed_read(STRANGER, gate), admin=True), 403, "forbidden: admin only")
    assert read(gate, signed_read(host_identity.signing_key, gate), admin=True).reason == "admin read"


def admin_body(key, *, method="POST", path="/admin/trust/promote", **args):
    return sign_payload(key, {"client_id": addr(STRANGER), **args, "method": method, "path": path, "timestamp": NOW})


def test_admin_post_is_route_bound_one_use_and_admin_only(build, host_identity):
    gate = build("careful")
    body = admin_body(host_identity.signing_key)
    raises_exactly(
        lambda: gate.admit_admin(body, method="POST", path="/admin/trust/block"),
        401,
        "unauthorized: route-bound method and path required",
    )
    assert gate.admit_admin(body, method="POST", path="/admin/trust/promote").signer == host_identity.address
    raises_exactly(
        lambda: gate.admit_admin(body, method="POST", path="/admin/trust/promote"),
        401,
        "unauthorized: signature already used",
    )
    raises_exactly(
        lambda: gate.admit_admin(admin_body(STRANGER), method="POST", path="/admin/trust/promote"),
        403,
        "forbidden: admin only",
    )


def test_super_admin_is_only_our_own_address(build, host_identity, make_config):
    (make_config().co_dir / "admins.txt").write_text(addr(FRIEND))
    gate = build("careful")
    raises_exactly(
        lambda: gate.admit_admin(
            admin_body(FRIEND, path="/superadmin/add"),
            method="POST",
            path="/superadmin/add",
            super_admin=True,
        ),
        403,
        "forbidden: super admin only",
    )
    body = admin_body(host_identity.signing_key, path="/superadmin/add")
    assert gate.admit_admin(body, method="POST", path="/superadmin/add", super_admin=True)


def command_frame(key, gate):
    frame = sign_command(key, {"type": "INPUT", "input_id": "1", "prompt": "hi"}, to=gate.our_address)
    payload = {**frame["payload"], "timestamp": NOW}
    return {**frame, **sign_payload(key, payload), "timestamp": NOW}


def test_commands_are_one_use(build):
    gate = build("careful")
    frame = command_frame(STRANGER, gate)
    assert gate.admit_command(frame, owner=addr(STRANGER)).payload["prompt"] == "hi"
    raises_exactly(
        lambda: gate.admit_command(frame, owner=addr(STRANGER)),
        401,
        "unauthorized: signed command already used",
    )
    raises_exactly(
        lambda: gate.admit_command(command_frame(FRIEND, gate), owner=addr(STRANGER)),
        401,
        "unauthorized: command signer does not own this connection",
    )


# --- logging and recording ----------------------------------------------------------------------------


def test_every_decision_is_logged(build, caplog):
    gate = build("strict")
    with caplog.at_level(logging.INFO, logger="connectonion.trust"):
        gate.admit(body_for(STRANGER, gate))
        with pytest.raises(Exception):
            gate.admit({"prompt": "x"})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trust decision")]
    assert f"identity={addr(STRANGER)} level=strict decision=accept" in lines[0]
    assert "identity=anonymous level=strict decision=reject reason=unauthorized: signed request required" in lines[1]


def test_attacker_text_in_from_is_not_logged(build, caplog):
    gate = build("careful")
    with caplog.at_level(logging.INFO, logger="connectonion.trust"), pytest.raises(Exception):
        gate.admit({"payload": {}, "from": "evil\n2024 fake log line", "signature": "00"})
    assert "fake log line" not in caplog.text and "identity=invalid-address" in caplog.text


@pytest.mark.django_db
def test_decisions_are_recorded_when_asked(build):
    from trust.models import TrustDecision

    gate = build("strict", recorder=record_decision)
    gate.admit(body_for(STRANGER, gate), transport="ws")
    with pytest.raises(Exception):
        gate.admit({"prompt": "x"})
    rows = list(TrustDecision.objects.order_by("id").values_list("identity", "level", "decision", "transport"))
    assert rows == [(addr(STRANGER), "strict", "accept", "ws"), ("anonymous", "strict", "reject", "http")]


@pytest.mark.django_db
def test_admin_list_edits_reach_the_gate(build):
    from trust.models import ListEntry

    gate = build("careful", use_database=True)
    assert gate.admit(body_for(ENEMY, gate, prompt="1")).signer == addr(ENEMY)
    ListEntry.objects.create(address=addr(ENEMY), kind="blacklist")
    gate.lists.invalidate()
    raises_exactly(lambda: gate.admit(body_for(ENEMY, gate, prompt="2")), 403, "forbidden: blacklisted")


@pytest.mark.django_db
def test_build_gate_wires_lists_ledger_and_policy(make_config, host_identity):
    from trust.gate import build_gate
    from trust.policy import AgentPolicy, LevelPolicy

    gate = build_gate(make_config(trust="strict"), host_identity)
    assert isinstance(gate.policy, LevelPolicy) and gate.trust == "strict"
    assert isinstance(gate.ledger, DatabaseLedger)
    body = envelope(STRANGER, gate.our_address, timestamp=time.time())
    gate.clock = time.time
    assert gate.admit(body).signer == addr(STRANGER)
    custom = build_gate(make_config(), host_identity, trust=CountingAgent())
    assert isinstance(custom.policy, AgentPolicy) and custom.trust == "custom"


@pytest.mark.django_db
def test_anonymous_accepts_are_logged_but_not_stored(build, caplog):
    from trust.models import TrustDecision

    gate = build("careful", recorder=record_decision)
    with caplog.at_level(logging.INFO, logger="connectonion.trust"):
        gate.admit({"prompt": "x"})
    assert "identity=anonymous" in caplog.text and "decision=accept" in caplog.text
    assert TrustDecision.objects.count() == 0
