"""HARDENING §3 upload rows H24-H38 and H22 against one real host with default limits (10 files of 10 MiB)."""

from __future__ import annotations

import json
import os
import time
import uuid

import httpx
import pytest
from nacl.signing import SigningKey

from tests.hostile.conftest import Snapshot, assert_clean_body, error_of
from tests.support.uploads import data_url, file_item
from trust.signing import sign_payload

MB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17


def png_url(size: int = len(PNG)) -> str:
    return data_url("image/png", PNG + b"\x00" * (size - len(PNG)))


def outside_files(host) -> set[str]:
    """Every file in the project folder outside .co/uploads (the H33 filesystem diff)."""
    found = set()
    for root, _dirs, names in os.walk(host.project):
        if root.endswith(
            (os.path.join(".co", "uploads"), os.path.join(".co", "logs"), os.path.join(".co", "sessions"))
        ):
            continue  # uploads land in uploads/; sessions/ holds one <uuid>.yaml per turn (checked below)
        found.update(os.path.join(root, n) for n in names)
    return {f for f in found if not f.endswith(("session_results.jsonl", ".sqlite3", "-wal", "-shm", ".log"))}


TOO_MANY = "Increase max_files_per_request in host.yaml"
TOO_BIG = "Increase max_file_size in host.yaml"

REJECTED = [
    ("H24 images not a list", {"images": "x"}, "images must be a list of strings"),
    ("H24 image item not a string", {"images": [5]}, "images must be a list of strings"),
    ("H24 11 images", {"images": [png_url()] * 11}, f"Too many images: 11 (max: 10). {TOO_MANY}"),
    ("H25 http metadata URL", {"images": ["http://169.254.169.254/latest/meta-data"]}, "images must be data URLs"),
    ("H25 file URL", {"images": ["file:///etc/passwd"]}, "images must be data URLs"),
    ("H25 ftp URL", {"images": ["ftp://example.com/x.png"]}, "images must be data URLs"),
    ("H26 text/html", {"images": ["data:text/html;base64,PGI+eDwvYj4="]}, "unsupported image type: text/html"),
    ("H26 svg", {"images": ["data:image/svg+xml;base64,PHN2Zy8+"]}, "unsupported image type: image/svg+xml"),
    ("H27 bang in base64", {"images": ["data:image/png;base64,Y!Q=="]}, "invalid base64 in image 0"),
    ("H27 bad padding", {"images": ["data:image/png;base64,iVBORw0KGgo="[:-1] + "=="]}, "invalid base64 in image 0"),
    ("H27 no comma", {"images": ["data:image/png;base64"]}, "invalid base64 in image 0"),
    ("H27 empty", {"images": ["data:image/png;base64,"]}, "invalid base64 in image 0"),
    (
        "H28 image 10 MiB + 1",
        {"images": [png_url(10 * MB + 1)]},
        f"Image too large: image 0 (10.0MB, max: 10MB). {TOO_BIG}",
    ),
    ("H30 files not a list", {"files": "x"}, "files must be a list of objects"),
    ("H30 file without name", {"files": [{"data": "aGk="}]}, "files[0].name required"),
    ("H30 file without data", {"files": [{"name": "a.txt"}]}, "files[0].data required"),
    ("H30 name not a string", {"files": [{"name": 5, "data": "aGk="}]}, "files[0].name must be a string"),
    (
        "H31 11 files",
        {"files": [file_item(f"f{i}.txt") for i in range(11)]},
        f"Too many files: 11 (max: 10). {TOO_MANY}",
    ),
    (
        "H32 third file 10 MiB + 1",
        {
            "files": [
                file_item("a.txt"),
                file_item("b.txt"),
                file_item("c.bin", b"\x00" * (10 * MB + 1), "application/octet-stream"),
            ]
        },
        f"File too large: c.bin (10.0MB, max: 10MB). {TOO_BIG}",
    ),
    ("H34 NUL in name", {"files": [file_item("a\x00.txt")]}, "invalid file name"),
]


@pytest.mark.parametrize(("extra", "error"), [pytest.param(*row[1:], id=row[0]) for row in REJECTED])
def test_rejected_uploads_write_nothing(big_host, extra, error):
    snap = Snapshot(big_host)
    response = httpx.post(big_host.url + "/input", json={"prompt": "hello", **extra}, timeout=60)
    assert (response.status_code, error_of(response)) == (400, error)
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h28_image_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not(small_host):
    """The boundary on the 1 MB host (10 MiB through the demo agent takes ~15 s here: see L7)."""
    ok = httpx.post(small_host.url + "/input", json={"prompt": "hello", "images": [png_url(MB)]}, timeout=60)
    assert ok.status_code == 200, ok.text[:300]
    snap = Snapshot(small_host)
    over = httpx.post(small_host.url + "/input", json={"prompt": "hello", "images": [png_url(MB + 1)]}, timeout=60)
    assert (over.status_code, error_of(over)) == (
        400,
        "Image too large: image 0 (1.0MB, max: 1MB). Increase max_file_size in host.yaml",
    )
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h29_png_declaring_huge_dimensions_is_not_a_5xx(big_host):
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (50_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    url = data_url("image/png", header + b"\x00" * 1000)
    response = httpx.post(big_host.url + "/input", json={"prompt": "hello", "images": [url]}, timeout=60)
    assert response.status_code in (200, 400)
    assert_clean_body(response)
    Snapshot(big_host).assert_healthy()


@pytest.mark.parametrize(
    "name",
    [
        "../../x.txt",
        "/etc/passwd",
        "a/../../b",
        "..",
        ".",
        "",
        "dir/",
        "..\\..\\x",
        "n\nl\r.txt",
        "\u202eevil.txt",
        "<script>.txt",
    ],
)
def test_h33_h37_traversal_and_odd_names_land_in_uploads(big_host, name):
    uploads = big_host.project / ".co" / "uploads"
    before_outside = outside_files(big_host)
    before = {p.name for p in uploads.iterdir()} if uploads.exists() else set()
    response = httpx.post(big_host.url + "/input", json={"prompt": "hello", "files": [file_item(name)]}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    new = {p for p in uploads.iterdir() if p.name not in before}
    assert len(new) == 1
    (saved,) = new
    assert saved.parent == uploads and saved.read_bytes() == b"hello"
    assert "\n" not in saved.name and "\r" not in saved.name and "/" not in saved.name
    assert saved.name not in ("", ".", "..")
    assert outside_files(big_host) == before_outside
    for record in (big_host.project / ".co" / "sessions").iterdir():
        uuid.UUID(record.stem)  # nothing named after the upload was created there
    Snapshot(big_host).assert_healthy()


@pytest.mark.parametrize("size", [300, 1000], ids=["H35 300 bytes", "H35 1000 bytes"])
def test_h35_long_names_are_shortened_keeping_the_extension(big_host, size):
    uploads = big_host.project / ".co" / "uploads"
    before = {p.name for p in uploads.iterdir()} if uploads.exists() else set()
    name = "é" * ((size - 4) // 2) + ".txt"
    response = httpx.post(big_host.url + "/input", json={"prompt": "hello", "files": [file_item(name)]}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    (saved,) = [p for p in uploads.iterdir() if p.name not in before]
    assert len(saved.name.encode()) <= 255 and saved.name.endswith(".txt")


def test_h36_same_names_never_overwrite(big_host):
    uploads = big_host.project / ".co" / "uploads"
    stem = f"dup{uuid.uuid4().hex[:8]}"
    first = httpx.post(
        big_host.url + "/input", json={"prompt": "hello", "files": [file_item(f"{stem}.txt", b"one")]}, timeout=60
    )
    assert first.status_code == 200
    both = [file_item(f"{stem}.txt", b"two"), file_item(f"{stem}.txt", b"three")]
    second = httpx.post(big_host.url + "/input", json={"prompt": "hello", "files": both}, timeout=60)
    assert second.status_code == 200
    assert (uploads / f"{stem}.txt").read_bytes() == b"one"
    contents = sorted(p.read_bytes() for p in uploads.iterdir() if p.name.startswith(stem))
    assert contents == [b"one", b"three", b"two"]


def test_h22_naming_another_signers_session_id_never_touches_it(big_host):
    key = SigningKey.generate()
    to = httpx.get(big_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(key, {"prompt": "my name is Ada", "to": to, "timestamp": int(time.time())})
    victim = httpx.post(big_host.url + "/input", json=signed, timeout=30).json()["session_id"]
    jsonl = big_host.project / ".co" / "session_results.jsonl"
    victim_lines = [line for line in jsonl.read_bytes().splitlines() if victim.encode() in line]
    response = httpx.post(
        big_host.url + "/input", json={"prompt": "what is my name", "session": {"session_id": victim}}, timeout=30
    )
    assert response.status_code in (200, 404), response.text
    assert_clean_body(response)
    if response.status_code == 200:
        assert response.json()["session_id"] != victim and "Ada" not in response.text
    assert [line for line in jsonl.read_bytes().splitlines() if victim.encode() in line] == victim_lines


def test_h38_signed_payload_prompt_wins_over_the_top_level_one(big_host):
    key = SigningKey.generate()
    to = httpx.get(big_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(key, {"prompt": "calculate 6*7", "to": to, "timestamp": int(time.time())})
    signed["prompt"] = "calculate 1+1"
    response = httpx.post(
        big_host.url + "/input", content=json.dumps(signed), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "6*7 = 42"
