"""``manage.py agentkey``: show, create or import the host's identity key (never prints the key)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from nacl.signing import SigningKey

from hosting.core.project import discard_unused_co_dir
from trust.identity import KEY_SIZE, IdentityError, derive_from_mnemonic, install_key, load_identity


class Command(BaseCommand):
    help = "Print the agent's address and key path; create or import a key when none exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--create", action="store_true", help="create a new identity if none exists")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--import-key", metavar="PATH", help="install a 32-byte raw Ed25519 seed file")
        source.add_argument("--import-phrase", metavar="WORDS", help="install the key of a 12-word recovery phrase")
        parser.add_argument("--force", action="store_true", help="replace an existing key (backed up first)")
        parser.add_argument("--co-dir", metavar="PATH", help="project .co folder (default: the host's)")
        parser.add_argument("--machine-dir", metavar="PATH", help="machine folder (default: ~/.co)")

    def handle(self, *args, **options) -> None:
        co_dir = Path(options["co_dir"]) if options["co_dir"] else settings.HOST.co_dir
        machine_dir = Path(options["machine_dir"]) if options["machine_dir"] else None
        try:
            if options["import_key"] or options["import_phrase"]:
                identity, backups = self._import(co_dir, options)
                for backup in backups:
                    self.stdout.write(f"backup: {backup}")
            else:
                identity = load_identity(co_dir, machine_dir=machine_dir, create=options["create"])
        except IdentityError as exc:
            if not options["co_dir"]:
                discard_unused_co_dir()
            raise CommandError(str(exc)) from None
        for warning in identity.warnings:
            self.stderr.write(f"warning: {warning}")
        if identity.created:
            self.stdout.write("created a new identity")
        self.stdout.write(f"address: {identity.address}")
        self.stdout.write(f"key: {identity.key_path}")

    def _import(self, co_dir: Path, options: dict):
        phrase = None
        if options["import_key"]:
            path = Path(options["import_key"])
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"{path}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
            if len(raw) != KEY_SIZE:
                raise CommandError(f"{path}: a key file must hold exactly 32 raw bytes (found {len(raw)})")
            signing_key = SigningKey(raw)
        else:
            phrase = options["import_phrase"]
            try:
                signing_key = derive_from_mnemonic(phrase)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        return install_key(co_dir, signing_key, phrase=phrase, force=options["force"])
