"""Session results in a shared database (issue 18): one row per session, its latest record.

The JSONL store keeps every version of a record and the last line wins; here the row *is* the last
version. The columns the host looks records up by are real columns with indexes, so ``GET /sessions/{id}``
(the primary key), a signer's listing (owner, created) and the sweeper's "running turns" (a partial index)
stay flat as the table grows. Everything else of the record is ``data``: JSON text, not ``jsonb``, because
``jsonb`` refuses ``\\u0000``, which a prompt may hold and the JSONL store keeps.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

LIVE = ("running", "waiting_approval")


class SessionResult(models.Model):
    session_id = models.CharField(primary_key=True, max_length=128)
    status = models.CharField(max_length=32)
    created = models.FloatField()
    expires = models.FloatField()
    updated_at = models.FloatField()
    owner = models.CharField(max_length=66, null=True, blank=True)  # the signer's address; None = anonymous
    worker = models.CharField(max_length=64, null=True, blank=True)  # whose lease keeps a live turn (D30)
    prompt = models.TextField(blank=True, default="")  # for the admin's search (NUL bytes dropped)
    data = models.TextField()  # the rest of the record, as JSON text

    class Meta:
        db_table = "sessions_app_result"
        indexes = [
            models.Index(fields=["-created"], name="result_created"),
            models.Index(fields=["owner", "-created"], name="result_owner_created"),
            models.Index(fields=["expires"], name="result_expires", condition=~Q(status__in=LIVE)),
            models.Index(fields=["worker"], name="result_live_worker", condition=Q(status__in=LIVE)),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.status})"


class WorkerLease(models.Model):
    """A serving process's lease (D30 across machines): valid until ``expires``, on the database's clock."""

    token = models.CharField(primary_key=True, max_length=64)
    expires = models.FloatField()

    class Meta:
        db_table = "sessions_app_lease"

    def __str__(self) -> str:
        return self.token
