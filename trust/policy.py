"""Trust policies (PROTOCOL §7.1, §7.4, D15, D26): levels, natural-language policies with front-matter
fast rules, and custom trust agents, judged by a model that only ever sees the prompt as quoted data.

Every model failure fails closed: ``Misconfigured("misconfigured: trust agent unavailable")``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError
from trust.decision import LEVELS, Decision, TrustRequest, TrustSettings
from trust.judges import TrustAgentLike, ask, default_judge, judge_text, parse_answer

if TYPE_CHECKING:
    from trust.lists import AccessLists

logger = logging.getLogger("connectonion.trust")


# --- front matter -----------------------------------------------------------------------------------

ALLOW_CATEGORIES = ("admin", "whitelisted", "contact", "stranger", "anonymous")
DENY_CATEGORIES = ("blocked", "stranger", "anonymous")
_SYNONYMS = {"whitelist": "whitelisted", "contacts": "contact", "blacklisted": "blocked", "admins": "admin"}


@dataclass(frozen=True)
class Rules:
    """Front-matter fast rules (PROTOCOL §7.4), already resolved against the environment."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ("blocked",)
    invite_codes: tuple[str, ...] = field(default=(), repr=False)
    payment: float | None = None
    default: str = "ask"

    @property
    def onboard_methods(self) -> tuple[str, ...]:
        """Usable onboarding methods: only those with a configured code or a positive price."""
        methods = []
        if self.invite_codes:
            methods.append("invite_code")
        if self.payment:
            methods.append("payment")
        return tuple(methods)


def _resolve(value: Any, variables: Mapping[str, str]) -> str:
    """``$NAME`` reads the environment; unset means empty (a closed door, never the placeholder)."""
    text = str(value).strip()
    if text.startswith("$"):
        return (variables.get(text[1:]) or "").strip()
    return text


def _categories(key: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"trust policy: {key} must be a list of categories (got {value!r})")
    out = []
    for item in items:
        name = _SYNONYMS.get(str(item).strip().lower(), str(item).strip().lower())
        if name not in allowed:
            raise ConfigError(f"trust policy: {key} entry {item!r} is not one of {', '.join(allowed)}")
        out.append(name)
    return tuple(out)


def _onboarding(onboard: Any, variables: Mapping[str, str]) -> tuple[tuple[str, ...], float | None]:
    """The front matter's ``onboard``: invite codes and a payment amount (``$NAME`` resolved)."""
    if not isinstance(onboard, dict):
        raise ConfigError("trust policy: onboard must be a mapping")
    codes = onboard.get("invite_code") or []
    codes = [codes] if isinstance(codes, str | int) else codes
    if not isinstance(codes, list):
        raise ConfigError("trust policy: onboard.invite_code must be a list")
    invite_codes = tuple(c for c in (_resolve(code, variables) for code in codes) if c)
    payment = None
    if onboard.get("payment") is not None:
        price = _resolve(onboard["payment"], variables)
        try:
            payment = float(price) if price else None
        except ValueError:
            payment = None  # an operator typo closes the door rather than crashing the gate
        if payment is not None and not payment > 0:
            payment = None
    return invite_codes, payment


def parse_policy(text: str, variables: Mapping[str, str] | None = None) -> tuple[Rules | None, str]:
    """Split a policy into its front-matter rules (None when it has none) and the free text.

    Raises ``ConfigError`` for front matter that is not a YAML mapping of known keys.
    """
    import yaml

    from common import safeyaml

    variables = variables or {}
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None, text.strip()
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ConfigError("trust policy: front matter opened with '---' is never closed") from None
    try:
        raw = safeyaml.load("\n".join(lines[1:end])) or {}
    except safeyaml.AliasRefused as exc:
        raise ConfigError(f"trust policy: front matter: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"trust policy: front matter is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError("trust policy: front matter must be a mapping")
    body = "\n".join(lines[end + 1 :]).strip()
    unknown = set(raw) - {"allow", "deny", "onboard", "default"}
    if unknown:
        logger.warning("trust policy: unknown front matter keys ignored: %s", ", ".join(sorted(map(str, unknown))))
    invite_codes, payment = _onboarding(raw.get("onboard") or {}, variables)
    default = str(raw.get("default") or ("ask" if body else "deny")).strip().lower()
    if default not in ("allow", "deny", "ask"):
        raise ConfigError(f"trust policy: default must be allow, deny or ask (got {raw.get('default')!r})")
    rules = Rules(
        allow=_categories("allow", raw.get("allow"), ALLOW_CATEGORIES),
        deny=_categories("deny", raw.get("deny", ["blocked"]), DENY_CATEGORIES),
        invite_codes=invite_codes,
        payment=payment,
        default=default,
    )
    return rules, body


def _matches(category: str, request: TrustRequest, lists: AccessLists) -> bool:
    who = request.identity
    if category == "anonymous":
        return who is None
    if category == "stranger":
        return request.level == "stranger"
    if who is None:
        return False
    return {
        "admin": lists.is_admin,
        "whitelisted": lambda a: lists.is_whitelisted(a) or lists.is_admin(a),
        "contact": lists.is_contact,
        "blocked": lists.is_blacklisted,
    }[category](who)


def apply_rules(rules: Rules, request: TrustRequest, lists: AccessLists) -> Decision | None:
    """deny -> allow (first match) -> invite code (promotes to contact) -> default; None means ask."""
    for category in rules.deny:
        if _matches(category, request, lists):
            return Decision(False, category, "rule")
    for category in rules.allow:
        if _matches(category, request, lists):
            return Decision(True, f"allowed: {category}", "rule")
    code = request.invite_code
    if isinstance(code, str) and code and any(hmac.compare_digest(code, c) for c in rules.invite_codes):
        if request.identity is not None:
            lists.add(request.identity, "contact", note="invite code")
        return Decision(True, "invite code accepted", "rule")
    if rules.default == "allow":
        return Decision(True, "allowed by default", "rule")
    if rules.default == "deny":
        return Decision(False, "not allowed by this agent's trust policy", "rule")
    return None


# --- the model's answer -----------------------------------------------------------------------------

# --- policies ---------------------------------------------------------------------------------------


class Policy:
    """A trust setting. ``level`` is open/careful/strict (handled by the gate) or custom (``decide``)."""

    level: str = "custom"
    rules: Rules | None = None

    @property
    def onboard_methods(self) -> tuple[str, ...]:
        return self.rules.onboard_methods if self.rules else ()

    def decide(self, request: TrustRequest, lists: AccessLists) -> Decision:
        raise NotImplementedError


class LevelPolicy(Policy):
    """``open``, ``careful`` or ``strict``: decided by the gate without a model (D3-D5)."""

    def __init__(self, level: str) -> None:
        if level not in LEVELS:
            raise ConfigError(f"trust level must be one of {', '.join(LEVELS)} (got {level!r})")
        self.level = level

    def decide(self, request: TrustRequest, lists: AccessLists) -> Decision:
        raise RuntimeError("level policies are decided by the gate")


class _JudgedPolicy(Policy):
    """Fast rules first, then a judge, with answers cached per identity."""

    allow_first_word = False

    def __init__(self, rules: Rules | None, text: str, judge: Callable[[str], Any], settings: TrustSettings):
        self.rules = rules
        self.text = text
        self.judge = judge
        self.settings = settings
        self._cache: dict[str, tuple[float, Decision]] = {}
        self._lock = threading.Lock()

    def decide(self, request: TrustRequest, lists: AccessLists) -> Decision:
        if self.rules is not None:
            ruled = apply_rules(self.rules, request, lists)
            if ruled is not None:
                return ruled
        key = request.identity or "anonymous"
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached and cached[0] > now:
            return Decision(cached[1].accept, cached[1].reason, "cache")
        decision = parse_answer(
            ask(self.judge, self.question(request), self.settings.timeout),
            allow_first_word=self.allow_first_word,
        )
        with self._lock:
            if len(self._cache) >= 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self.settings.cache_ttl, decision)
        return decision

    def question(self, request: TrustRequest) -> str:
        return judge_text(self.text, request)

    def forget(self) -> None:
        """Drop cached answers (after the policy or the lists change)."""
        with self._lock:
            self._cache.clear()


class TextPolicy(_JudgedPolicy):
    """A natural-language policy, inline or from a file, judged by a model (D15, D26)."""


class AgentPolicy(_JudgedPolicy):
    """A custom trust agent: any object with ``input(text) -> str``. Its answer may be JSON or start
    with ACCEPT/REJECT."""

    allow_first_word = True

    def __init__(self, agent: TrustAgentLike, settings: TrustSettings, *, rules: Rules | None = None):
        serial = threading.Lock()  # one agent object, one conversation at a time

        def ask(text: str) -> Any:
            with serial:
                return agent.input(text)

        super().__init__(rules, "", ask, settings)
        self.agent = agent

    def question(self, request: TrustRequest) -> str:
        return judge_text("Decide with your own trust instructions.", request)


def _policy_text(trust: str, project_dir: Path) -> str:
    """A string that names an existing file is read as the policy; otherwise it is the policy."""
    if "\n" not in trust and len(trust) < 1024:
        candidate = Path(trust).expanduser()
        candidate = candidate if candidate.is_absolute() else project_dir / candidate
        try:
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"trust policy file {candidate}: cannot read it ({exc.__class__.__name__})") from None
    return trust


def build_policy(
    trust: Any,
    *,
    project_dir: Path,
    settings: TrustSettings | None = None,
    judge: Callable[[str], Any] | None = None,
) -> Policy:
    """Turn a ``trust`` setting (PROTOCOL §7.1) into a policy.

    A level string -> ``LevelPolicy``; an object with ``input`` -> ``AgentPolicy``; any other string
    -> ``TextPolicy`` (a path to an existing file is read). ``judge`` overrides the model caller.
    Raises ``ConfigError`` for an empty or malformed policy.
    """
    settings = settings or TrustSettings()
    if isinstance(trust, str) and trust.strip().lower() in LEVELS:
        return LevelPolicy(trust.strip().lower())
    if not isinstance(trust, str) and callable(getattr(trust, "input", None)):
        return AgentPolicy(trust, settings)
    if not isinstance(trust, str) or not trust.strip():
        raise ConfigError(f"trust must be a level, a policy text, a policy file or an agent (got {trust!r})")
    text = _policy_text(trust.strip(), Path(project_dir))
    rules, body = parse_policy(text, settings.variables)
    return TextPolicy(rules, body, judge or default_judge(settings, Path(project_dir) / ".co"), settings)
