"""Settings for in-process tests: the project's own settings, with ``.co/`` in a throwaway folder."""

import json
import os
import tempfile

_project = tempfile.mkdtemp(prefix="co-test-project-")
os.environ.setdefault("CONNECTONION_HOST_ARGS", json.dumps({"project_dir": _project, "relay_url": None}))

from connectonion_site.settings import *  # noqa: E402,F403
