"""One worker process of ``runhost --workers N``: serve on the socket the supervisor passed us."""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.settings")
    import django

    django.setup()
    from django.conf import settings

    from hosting.serving.server import ANNOUNCER_ENV, serve_forever

    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    serve_forever(settings.HOST, sock, announcer=os.environ.get(ANNOUNCER_ENV) == "1")


if __name__ == "__main__":
    main()
