#!/usr/bin/env python
"""Django's command-line utility for the ConnectOnion host."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.settings")
    if sys.argv[1:2] == ["runhost"]:  # its options go into the host config the settings are built from
        from hosting.management.commands.runhost import export_options

        export_options(sys.argv[2:])
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
