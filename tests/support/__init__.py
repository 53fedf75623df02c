"""Helpers shared by every test folder: ports and services, waiting, signed envelopes, host processes.

One copy of each: a test module imports from here (``tests.conftest`` re-exports the host classes that older
modules import from it).
"""
