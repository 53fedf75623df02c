"""Trust records kept in the database: list entries edited in the admin, the one-use ledger, decisions."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from trust.identity import is_address


def validate_address(value: str) -> None:
    """Model-level check: ``0x`` followed by 64 hex digits (PROTOCOL §1.1)."""
    if not is_address(value):
        raise ValidationError("Enter an address: 0x followed by 64 hex digits.", code="invalid_address")


class AddressField(models.CharField):
    """An identity address, always stored lowercase (comparisons are case-insensitive, §1.1)."""

    default_validators = [validate_address]

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 66)
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        return value.strip().lower() if isinstance(value, str) else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value.lower() if isinstance(value, str) else value

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if isinstance(value, str):
            value = value.strip().lower()
            setattr(model_instance, self.attname, value)
        return value


class ListEntry(models.Model):
    """One address on one trust list; merged with the ``.co/*.txt`` files and ``host()`` arguments."""

    class Kind(models.TextChoices):
        BLACKLIST = "blacklist", "Blacklist"
        WHITELIST = "whitelist", "Whitelist"
        CONTACT = "contact", "Contact"
        ADMIN = "admin", "Admin"

    address = AddressField(help_text="0x followed by 64 hex digits; stored lowercase.")
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    note = models.CharField(max_length=200, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["address", "kind"], name="trust_listentry_unique")]
        ordering = ["kind", "address"]
        verbose_name = "list entry"
        verbose_name_plural = "list entries"

    def __str__(self) -> str:
        return f"{self.kind}: {self.address}"


class SeenSignature(models.Model):
    """One-use ledger row (PROTOCOL §2.4): SHA-256 of the raw signature bytes, kept until it expires."""

    digest = models.CharField(max_length=64, primary_key=True)
    expires_at = models.FloatField(db_index=True)

    class Meta:
        verbose_name = "seen signature"

    def __str__(self) -> str:
        return self.digest


class TrustDecision(models.Model):
    """What the gate decided for one request: accepted, rejected or failed closed, and why."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    identity = models.CharField(max_length=66, db_index=True, help_text="Signer address or 'anonymous'.")
    level = models.CharField(max_length=16, help_text="Trust level in force: open, careful, strict, custom.")
    decision = models.CharField(max_length=8, db_index=True)
    reason = models.CharField(max_length=300, blank=True, default="")
    transport = models.CharField(max_length=8, default="http")

    class Meta:
        ordering = ["-created"]
        get_latest_by = "created"

    def __str__(self) -> str:
        return f"{self.decision} {self.identity} ({self.reason})"
