"""Trust lists (PROTOCOL §7.4, HARDENING F9): files, arguments, host.yaml entries and admin rows."""

from __future__ import annotations

import os
import time

import pytest

from common.errors import Misconfigured
from trust.lists import AccessLists, ListFile, Patterns, parse_list

A = "0x" + "aa" * 32
B = "0x" + "bb" * 32
C = "0x" + "cc" * 32


def lists_for(config, identity=None, **kwargs) -> AccessLists:
    return AccessLists(config, identity, use_database=False, **kwargs)


def write(path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(data)
    # Make every rewrite visible even within one mtime tick.
    stamp = time.time_ns() + 1_000_000_000 * getattr(write, "counter", 0)
    write.counter = getattr(write, "counter", 0) + 1
    os.utime(path, ns=(stamp, stamp))


def test_parse_list_comments_blank_lines_crlf_bom_and_case():
    text = "\ufeff# header\r\n" + A.upper().replace("0X", "0x") + "  # trailing comment\r\n\r\n   \r\n" + B + "\n"
    assert parse_list(text) == (A, B)


def test_patterns_wildcards_match_the_whole_address():
    patterns = Patterns.of(["0xaa*", "*bb", "0x*cc*"])
    assert patterns.matches(A) and patterns.matches(B) and patterns.matches(C)
    assert not Patterns.of(["0xab*"]).matches(A)
    assert not Patterns.of(["aa*"]).matches(A)  # anchored at the start
    assert not Patterns.of(["0x.*"]).matches(A)  # regex characters are literal
    assert Patterns.of(["*"]).matches("anything")


def test_f9_blacklist_file_with_crlf_comments_uppercase_and_wildcard(make_config):
    config = make_config()
    write(
        config.co_dir / "blacklist.txt",
        f"# blocked\r\n{A.upper().replace('0X', '0x')}\r\n0xbb*  # all bb\r\n",
    )
    lists = lists_for(config)
    assert lists.is_blacklisted(A) and lists.is_blacklisted(A.upper().replace("0X", "0x"))
    assert lists.is_blacklisted(B)
    assert not lists.is_blacklisted(C)


def test_blocklist_and_blacklist_files_are_aliases(make_config):
    config = make_config()
    write(config.co_dir / "blocklist.txt", A)
    write(config.co_dir / "blacklist.txt", B)
    lists = lists_for(config)
    assert lists.is_blacklisted(A) and lists.is_blacklisted(B)


def test_changed_file_is_seen_without_restart(make_config):
    config = make_config()
    lists = lists_for(config)
    assert not lists.is_whitelisted(A)
    write(config.co_dir / "whitelist.txt", A)
    assert lists.is_whitelisted(A)
    write(config.co_dir / "whitelist.txt", B)
    assert not lists.is_whitelisted(A) and lists.is_whitelisted(B)
    (config.co_dir / "whitelist.txt").unlink()
    assert not lists.is_whitelisted(B)


def test_unchanged_file_is_not_reparsed(tmp_path):
    path = tmp_path / "list.txt"
    write(path, A)
    list_file = ListFile(path)
    first = list_file.patterns()
    assert list_file.patterns() is first


def test_host_arguments_and_yaml_entries_are_merged(make_config):
    config = make_config(blacklist=(A,), whitelist=(B.upper().replace("0X", "0x"), "0xcc*"))
    lists = lists_for(config)
    assert lists.is_blacklisted(A)
    assert lists.is_whitelisted(B) and lists.is_whitelisted(C)


def test_a_config_entry_naming_a_project_file_is_read_as_a_list_file(make_config, tmp_path):
    write(tmp_path / "lists" / "blocked.txt", f"# from host.yaml\n{C}\n")
    config = make_config(blacklist=("lists/blocked.txt", A))
    lists = lists_for(config)
    assert lists.is_blacklisted(C) and lists.is_blacklisted(A)
    write(tmp_path / "lists" / "blocked.txt", B)
    assert lists.is_blacklisted(B) and not lists.is_blacklisted(C)


def test_contacts_admins_and_levels(make_config, host_identity):
    config = make_config(whitelist=(B,))
    write(config.co_dir / "contacts.txt", C)
    write(config.co_dir / "admins.txt", A)
    write(config.co_dir / "blocklist.txt", "0x" + "dd" * 32)
    lists = lists_for(config, host_identity)
    assert lists.level_of("0x" + "dd" * 32) == "blocked"
    assert lists.level_of(B) == "whitelist"
    assert lists.level_of(A) == "whitelist"  # admins count as whitelisted
    assert lists.level_of(C) == "contact"
    assert lists.level_of("0x" + "ee" * 32) == "stranger"
    assert lists.level_of(None) == "stranger"
    assert lists.is_admin(A) and not lists.is_admin(B)


def test_our_own_address_is_always_an_admin_and_the_only_super_admin(make_config, host_identity):
    write(make_config().co_dir / "admins.txt", A)
    lists = lists_for(make_config(), host_identity)
    assert lists.is_admin(host_identity.address)
    assert lists.is_admin(host_identity.address.upper().replace("0X", "0x"))
    assert lists.is_super_admin(host_identity.address)
    assert not lists.is_super_admin(A)


def test_blocked_wins_over_whitelisted(make_config):
    config = make_config(whitelist=(A,), blacklist=(A,))
    assert lists_for(config).level_of(A) == "blocked"


def test_unreadable_list_file_fails_closed(make_config):
    config = make_config()
    write(config.co_dir / "blocklist.txt", b"\xff\xfe not utf-8 \xff")
    with pytest.raises(Misconfigured) as info:
        lists_for(config).is_blacklisted(A)
    assert info.value.status == 503 and info.value.message.startswith("misconfigured:")
    assert str(config.co_dir) not in info.value.message


def test_list_file_that_is_a_directory_fails_closed(make_config):
    config = make_config()
    (config.co_dir / "whitelist.txt").mkdir(parents=True)
    with pytest.raises(Misconfigured):
        lists_for(config).is_whitelisted(A)


@pytest.mark.django_db
def test_database_entries_count_and_edits_show_within_the_ttl(make_config):
    from trust.models import ListEntry

    lists = AccessLists(make_config(), None, db_ttl=0.05)
    assert not lists.is_blacklisted(A)
    ListEntry.objects.create(address=A.upper().replace("0X", "0x"), kind="blacklist")
    time.sleep(0.06)
    assert lists.is_blacklisted(A)
    ListEntry.objects.create(address=C, kind="contact")
    ListEntry.objects.create(address=B, kind="admin")
    lists.invalidate()
    assert lists.level_of(C) == "contact" and lists.is_admin(B)


@pytest.mark.django_db
def test_add_and_remove_edit_database_rows(make_config):
    from trust.models import ListEntry

    lists = AccessLists(make_config(), None)
    assert lists.add(A.upper().replace("0X", "0x"), "contact", note="invite code") is True
    assert lists.add(A, "contact") is False
    assert ListEntry.objects.get().address == A
    assert lists.level_of(A) == "contact"
    assert lists.remove(A, "contact") is True
    assert lists.level_of(A) == "stranger"
    with pytest.raises(ValueError):
        lists.add("bob", "contact")
    with pytest.raises(ValueError):
        lists.add(A, "friends")


@pytest.mark.django_db
def test_list_entry_model_validates_and_lowercases():
    from django.core.exceptions import ValidationError

    from trust.models import ListEntry

    entry = ListEntry(address="0x" + "AB" * 32, kind="whitelist")
    entry.full_clean()
    entry.save()
    entry.refresh_from_db()
    assert entry.address == "0x" + "ab" * 32
    assert ListEntry.objects.filter(address="0x" + "AB" * 32).exists()
    with pytest.raises(ValidationError):
        ListEntry(address="not-an-address", kind="whitelist").full_clean()
    with pytest.raises(ValidationError):
        ListEntry(address=A, kind="friends").full_clean()
