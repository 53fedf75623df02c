"""The trust gate: one decision flow for every HTTP request and WebSocket handshake (PROTOCOL §7.3).

blacklist -> signature (§2.3) -> unsigned at strict -> one-use ledger (§2.4) -> whitelist/admin ->
level or policy. Synchronous (it reads files, the database and maybe a model): async callers run it
in a worker thread. Failures raise ``common.errors`` classes carrying the exact spec text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from common.errors import Forbidden, HostError, Unauthorized
from trust.audit import DecisionAudit, Recorder, shown
from trust.decision import Admission, TrustRequest, TrustSettings
from trust.policy import Policy, build_policy
from trust.signing import (
    SIGNED_REQUEST_REQUIRED,
    Verified,
    header_signer,
    is_signed,
    verify_command,
    verify_envelope,
    verify_headers,
)

if TYPE_CHECKING:
    from trust.identity import AgentIdentity
    from trust.ledger import Ledger
    from trust.lists import AccessLists
    from trust.options import TrustOptions

BLACKLISTED = "forbidden: blacklisted"
NOT_WHITELISTED = "forbidden: not on this agent's whitelist"
REPLAY_CONNECT = "unauthorized: this CONNECT was already used"
REPLAY_READ = "unauthorized: signature already used"
REPLAY_COMMAND = "unauthorized: signed command already used"
ROUTE_BOUND = "unauthorized: route-bound method and path required"
ADMIN_ONLY = "forbidden: admin only"
SUPER_ADMIN_ONLY = "forbidden: super admin only"


def build_gate(
    config: TrustOptions,
    identity: AgentIdentity,
    *,
    trust: Any = None,
    settings: TrustSettings | None = None,
    recorder: Recorder | None = None,
) -> Gate:
    """The usual wiring: lists from ``config`` (files, arguments, database), the shared ledger of
    ``get_ledger``, and the policy of ``trust`` (an agent object from ``host()``) or ``config.trust``.
    Raises ``ConfigError`` for a malformed policy."""
    from trust.ledger import get_ledger
    from trust.lists import AccessLists

    policy = build_policy(
        trust if trust is not None else config.trust, project_dir=config.project_dir, settings=settings
    )
    return Gate(config, identity, AccessLists(config, identity), get_ledger(config), policy, recorder=recorder)


class Gate:
    """Decides who may use the agent. Build once per process; thread-safe."""

    def __init__(
        self,
        config: TrustOptions,
        identity: AgentIdentity,
        lists: AccessLists,
        ledger: Ledger,
        policy: Policy,
        *,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.lists = lists
        self.ledger = ledger
        self.policy = policy
        self.trust = policy.level
        self.window = float(config.signature_window)
        self.strict_requires_whitelist = bool(config.strict_requires_whitelist)
        self.audit = DecisionAudit(recorder)
        self.clock = clock

    @property
    def our_address(self) -> str:
        return self.identity.address

    @property
    def onboard_methods(self) -> tuple[str, ...]:
        """Onboarding methods the policy actually offers (for ONBOARD_REQUIRED and /info)."""
        return self.policy.onboard_methods

    def is_admin(self, address: str | None) -> bool:
        return self.lists.is_admin(address)

    def level_of(self, address: str | None) -> str:
        return self.lists.level_of(address)

    # -- requests with a JSON body: POST /input, handshakes ------------------------------------------

    def admit(
        self,
        body: Mapping[str, Any] | None,
        *,
        unsigned_from: str | None = None,
        require_to: bool = True,
        replay_message: str = REPLAY_CONNECT,
        allow_repeat: bool = False,
        prompt: str | None = None,
        transport: str = "http",
        ledger: bool = True,
    ) -> Admission:
        """Run the §7.3 flow on a request object; returns the admission or raises
        ``Forbidden`` (403), ``Unauthorized`` (401) or ``Misconfigured`` (503).

        ``body`` is signed when it has any of ``payload``/``from``/``signature``; ``unsigned_from`` is
        a sender named outside an envelope (checked against the blacklist only). The policy sees
        ``prompt`` when given, else ``payload["prompt"]``. ``allow_repeat`` admits a ledger repeat and
        marks it ``repeated`` (D20; see ``admit_handshake``). ``ledger=False`` skips the one-use ledger:
        inside a sealed socket, whose peer is bound to the handshake's signer (PROTOCOL §2.4, §4.8).
        """
        claimed = body.get("from") if is_signed(body) else unsigned_from  # type: ignore[union-attr]
        try:
            admission = self._admit(
                body or {},
                claimed=claimed,
                unsigned_from=unsigned_from,
                require_to=require_to,
                replay_message=replay_message,
                allow_repeat=allow_repeat,
                prompt=prompt,
                transport=transport,
                ledger=ledger,
            )
        except HostError as exc:
            self._log(shown(claimed), exc, transport)
            raise
        self._log(admission.signer or "anonymous", admission, transport)
        return admission

    def _admit(
        self,
        body: Mapping[str, Any],
        *,
        claimed: Any,
        unsigned_from: str | None,
        require_to: bool,
        replay_message: str,
        allow_repeat: bool,
        prompt: str | None,
        transport: str,
        ledger: bool = True,
    ) -> Admission:
        # 1. Blacklist, before any cryptography (HARDENING S13); an unsigned `from` counts too.
        for name in (claimed, unsigned_from):
            if isinstance(name, str) and self.lists.is_blacklisted(name):
                raise Forbidden(BLACKLISTED)
        signed = is_signed(body)
        verified: Verified | None = None
        repeated = False
        if signed:
            # 2. Signature: always fully verified, whoever claims to send it (S18).
            verified = verify_envelope(
                body,
                our_address=self.our_address,
                require_to=require_to,
                window=self.window,
                now=self.clock(),
            )
            # 3. One use (§2.4); D20 lets a handshake repeat when the caller asks for it.
            if ledger and not self.ledger.claim(verified.signature, expires_at=verified.timestamp + self.window):
                if not allow_repeat:
                    raise Unauthorized(replay_message)
                repeated = True
        elif self.trust == "strict":
            raise Unauthorized(SIGNED_REQUEST_REQUIRED)  # D3
        payload = verified.payload if verified else dict(body)
        signer = verified.signer if verified else None
        if prompt is None and isinstance(payload.get("prompt"), str):
            prompt = payload["prompt"]
        reason = self._decide(signer, payload, prompt, transport)
        return Admission(
            signer=signer,
            payload=payload,
            signed=signed,
            level=self.lists.level_of(signer),
            reason=reason,
            repeated=repeated,
            trust=self.trust,
        )

    def _decide(self, signer: str | None, payload: Mapping[str, Any], prompt: str | None, transport: str) -> str:
        """Steps 3-5 of §7.3 for a caller whose signature (if any) is verified; returns the reason."""
        if signer is not None:
            if self.lists.is_admin(signer):
                return "admin"
            if self.lists.is_whitelisted(signer):
                return "whitelisted"
        if self.trust == "open":
            return "open"
        if self.trust == "careful":
            if signer is None:  # logged once, as this decision's reason (_log)
                return "careful: signature recommended"
            return "careful"
        if self.trust == "strict":
            if self.strict_requires_whitelist:
                raise Forbidden(NOT_WHITELISTED)
            return "strict: verified identity"  # D4
        invite = payload.get("invite_code")
        request = TrustRequest(
            identity=signer,
            sig_valid=signer is not None,
            level=self.lists.level_of(signer),
            prompt=prompt,
            invite_code=invite if isinstance(invite, str) else None,
            transport=transport,
        )
        decision = self.policy.decide(request, self.lists)
        if not decision.accept:
            raise Forbidden(f"forbidden: {decision.reason}")
        return f"policy ({decision.source}): {decision.reason}"

    def admit_handshake(self, frame: Mapping[str, Any], *, transport: str = "ws") -> Admission:
        """A CONNECT/INIT/ATTACH on an unsealed socket, including the D20 rule for repeats (PROTOCOL §2.4).

        A repeated signature is accepted when its payload has ``signed_commands: 1``, marked ``unproven``:
        the socket may show nothing of the signer's sessions until a signed command verifies on it. Without
        ``signed_commands: 1`` the repeat is refused at strict and custom, and downgraded to anonymous at
        open/careful. This is the only place the rule lives; every door (``/ws``, the relay) calls it.
        """
        admission = self.admit(frame, allow_repeat=True, transport=transport)
        if not admission.repeated:
            return admission
        if admission.payload.get("signed_commands") == 1:
            return replace(admission, unproven=True)
        if self.trust not in ("open", "careful"):
            self._log(admission.signer or "anonymous", Unauthorized(REPLAY_CONNECT), transport)
            raise Unauthorized(REPLAY_CONNECT)
        return Admission(
            signer=None,
            payload=admission.payload,
            signed=False,
            level="stranger",
            reason="repeated handshake: anonymous",
            repeated=True,
            trust=self.trust,
        )

    # -- v2 commands ----------------------------------------------------------------------------------

    def admit_command(
        self, frame: Mapping[str, Any], *, owner: str, transport: str = "ws", ledger: bool = True
    ) -> Verified:
        """A signed command on a v2 socket (PROTOCOL §2.6); act on ``Verified.payload`` only.
        ``ledger=False``: inside a sealed socket (PROTOCOL §4.8), where the ledger is not consulted."""
        claimed = frame.get("from")
        try:
            if isinstance(claimed, str) and self.lists.is_blacklisted(claimed):
                raise Forbidden(BLACKLISTED)
            verified = verify_command(
                frame, owner=owner, our_address=self.our_address, window=self.window, now=self.clock()
            )
            if ledger and not self.ledger.claim(verified.signature, expires_at=verified.timestamp + self.window):
                raise Unauthorized(REPLAY_COMMAND)
        except HostError as exc:
            self._log(shown(claimed), exc, transport)
            raise
        return verified

    # -- signed reads and admin requests --------------------------------------------------------------

    def admit_headers(
        self,
        *,
        method: str,
        path: str,
        query_string: str | bytes,
        body: bytes,
        headers: Mapping[str, str],
        legacy_ok: bool = False,
        admin: bool = False,
        transport: str = "http",
    ) -> Admission:
        """A header-signed HTTP read (PROTOCOL §2.5). No signing headers -> anonymous (401 at strict,
        or when ``admin``). With ``admin`` the signer must be an admin (403 ``forbidden: admin only``)."""
        claimed = header_signer(headers, legacy_ok=legacy_ok)
        try:
            if claimed is None:
                if admin:
                    raise Unauthorized("unauthorized")
                if self.trust == "strict":
                    raise Unauthorized(SIGNED_REQUEST_REQUIRED)  # D8
                admission = Admission(None, {}, False, "stranger", "anonymous read", trust=self.trust)
            else:
                if self.lists.is_blacklisted(claimed):
                    raise Forbidden(BLACKLISTED)
                verified = verify_headers(
                    method=method,
                    path=path,
                    query_string=query_string,
                    body=body,
                    headers=headers,
                    our_address=self.our_address,
                    window=self.window,
                    now=self.clock(),
                    legacy_ok=legacy_ok,
                )
                if not self.ledger.claim(verified.signature, expires_at=verified.timestamp + self.window):
                    raise Unauthorized(REPLAY_READ)
                if admin and not self.lists.is_admin(verified.signer):
                    raise Forbidden(ADMIN_ONLY)
                admission = Admission(
                    verified.signer,
                    verified.payload,
                    True,
                    self.lists.level_of(verified.signer),
                    "admin read" if admin else "signed read",
                    trust=self.trust,
                )
        except HostError as exc:
            self._log(shown(claimed), exc, transport)
            raise
        self._log(admission.signer or "anonymous", admission, transport)
        return admission

    def admit_admin(
        self,
        body: Mapping[str, Any],
        *,
        method: str,
        path: str,
        super_admin: bool = False,
        transport: str = "http",
    ) -> Admission:
        """A signed admin POST (PROTOCOL §2.5, §3.8): envelope bound to the real method and path, one use,
        signer an admin (or our own address when ``super_admin``)."""
        claimed = body.get("from")
        try:
            if isinstance(claimed, str) and self.lists.is_blacklisted(claimed):
                raise Forbidden(BLACKLISTED)
            verified = verify_envelope(
                body, our_address=self.our_address, require_to=False, window=self.window, now=self.clock()
            )
            if verified.payload.get("method") != method.upper() or verified.payload.get("path") != path:
                raise Unauthorized(ROUTE_BOUND)
            if not self.ledger.claim(verified.signature, expires_at=verified.timestamp + self.window):
                raise Unauthorized(REPLAY_READ)
            if super_admin and not self.lists.is_super_admin(verified.signer):
                raise Forbidden(SUPER_ADMIN_ONLY)
            if not self.lists.is_admin(verified.signer):
                raise Forbidden(ADMIN_ONLY)
        except HostError as exc:
            self._log(shown(claimed), exc, transport)
            raise
        admission = Admission(verified.signer, verified.payload, True, "whitelist", "admin", trust=self.trust)
        self._log(verified.signer, admission, transport)
        return admission

    # -- the audit (trust.audit) ----------------------------------------------------------------------

    def _log(self, who: str, outcome: Admission | HostError, transport: str) -> None:
        if isinstance(outcome, Admission):
            decision, reason = "accept", outcome.reason
        else:
            decision = "error" if outcome.status >= 500 else "reject"
            reason = outcome.message
        self.audit.record(who, trust=self.trust, decision=decision, reason=reason, transport=transport)
