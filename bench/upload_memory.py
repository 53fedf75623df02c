"""Peak memory of upload checking and saving (HARDENING L7, H29): figures only, no assertions.

Each scenario runs in a fresh process. The input (the already-parsed JSON strings) is built first; then the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` 5) and read back after the call (``VmHWM``), so
the growth shown is what ``parse_uploads`` / ``save_files`` themselves add on top of the request (freed heap
pages are returned with ``malloc_trim`` before each step, so reused memory does not hide a peak).

    .venv/bin/python bench/upload_memory.py
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from common.errors import UploadRejected
from hosting.core.upload_input import parse_uploads
from hosting.core.uploads import save_files

MiB = 1024 * 1024
LIMIT_MB, MAX_FILES = 10, 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rss() -> int:
    return psutil.Process().memory_info().rss


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS first, so an earlier step's leftovers do not hide a peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; never reset


def measure(label: str, action) -> dict:
    gc.collect()
    release_free_memory()
    exact = reset_peak()
    before = rss()
    started = time.perf_counter()
    try:
        action()
        outcome = "accepted"
    except UploadRejected as exc:
        outcome = f"400 {exc.message[:60]}"
    seconds = time.perf_counter() - started
    return {
        "step": label,
        "outcome": outcome,
        "seconds": round(seconds, 3),
        "peak_growth": peak() - before,
        "peak_exact": exact,
    }


def random_b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def parse(images=None, files=None):
    return parse_uploads(images, files, max_file_size_mb=LIMIT_MB, max_files=MAX_FILES)


# --- scenarios: each returns (request bytes, [measurements]) ----------------------------------------------


def hostile_file() -> tuple[int, list[dict]]:
    files = [{"name": "evil.bin", "data": "data:application/octet-stream;base64," + "A" * (200 * MiB)}]
    return len(files[0]["data"]), [measure("parse_uploads", lambda: parse(None, files))]


def hostile_garbage() -> tuple[int, list[dict]]:
    files = [{"name": "evil.bin", "data": "!" * (200 * MiB)}]
    return len(files[0]["data"]), [measure("parse_uploads", lambda: parse(None, files))]


def hostile_image() -> tuple[int, list[dict]]:
    images = ["data:image/png;base64," + "A" * (200 * MiB)]
    return len(images[0]), [measure("parse_uploads", lambda: parse(images))]


def invalid_last_file() -> tuple[int, list[dict]]:
    """Every file at the limit, the last one broken in its final character: the costliest refusal."""
    files = [
        {"name": f"f{i}.bin", "data": "data:application/octet-stream;base64," + random_b64(LIMIT_MB * MiB)}
        for i in range(MAX_FILES)
    ]
    files[-1]["data"] = files[-1]["data"][:-3] + "!" + files[-1]["data"][-2:]  # keep the "==" padding
    return sum(len(f["data"]) for f in files), [measure("parse_uploads", lambda: parse(None, files))]


def _accept_and_save(prefix: str) -> tuple[int, list[dict]]:
    files = [{"name": "report.bin", "data": prefix + random_b64(LIMIT_MB * MiB)} for _ in range(MAX_FILES)]
    body = sum(len(f["data"]) for f in files)
    checked: list = []
    steps = [measure("parse_uploads", lambda: checked.extend(parse(None, files)[1]))]
    with tempfile.TemporaryDirectory() as folder:
        steps.append(measure("save_files", lambda: save_files(checked, Path(folder) / "uploads")))
        written = sum(p.stat().st_size for p in (Path(folder) / "uploads").iterdir())
        assert written == MAX_FILES * LIMIT_MB * MiB, written
    return body, steps


def accept_files_data_urls() -> tuple[int, list[dict]]:
    return _accept_and_save("data:application/octet-stream;base64,")


def accept_files_bare() -> tuple[int, list[dict]]:
    return _accept_and_save("")


def accept_images() -> tuple[int, list[dict]]:
    blob = base64.b64encode(PNG_MAGIC + os.urandom(LIMIT_MB * MiB - len(PNG_MAGIC))).decode()
    images = ["data:image/png;base64," + blob for _ in range(MAX_FILES)]
    del blob
    return sum(map(len, images)), [measure("parse_uploads", lambda: parse(images))]


SCENARIOS = {
    "refuse 200 MB base64 file (data URL)": hostile_file,
    "refuse 200 MB non-base64 file": hostile_garbage,
    "refuse 200 MB image": hostile_image,
    "refuse 10 x 10 MiB, last char invalid": invalid_last_file,
    "accept+save 10 x 10 MiB files (data URLs)": accept_files_data_urls,
    "accept+save 10 x 10 MiB files (bare)": accept_files_bare,
    "accept 10 x 10 MiB images": accept_images,
}


def run_one(name: str) -> None:
    baseline = rss()
    body, steps = SCENARIOS[name]()
    print(json.dumps({"baseline_rss": baseline, "body": body, "steps": steps}))


def main() -> None:
    print(f"python {sys.version.split()[0]}, limits {MAX_FILES} x {LIMIT_MB} MiB, one fresh process per scenario")
    print(f"{'scenario':44} {'step':14} {'body MiB':>9} {'time s':>7} {'peak +MiB':>10} {'× body':>7}  outcome")
    for name in SCENARIOS:
        done = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{name:44} FAILED\n{done.stderr}")
            continue
        report = json.loads(done.stdout.strip().splitlines()[-1])
        body = report["body"]
        for step in report["steps"]:
            growth = step["peak_growth"]
            mark = "" if step["peak_exact"] else " (ru_maxrss: lifetime peak)"
            print(
                f"{name:44} {step['step']:14} {body / MiB:9.1f} {step['seconds']:7.3f} {growth / MiB:10.1f} "
                f"{growth / body:7.2f}  {step['outcome']}{mark}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run_one(sys.argv[1])
    else:
        main()
