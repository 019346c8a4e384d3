"""Reject a name qlspec would refuse, before any file is written."""

import re
import sys

NAME = "{{ cookiecutter.name }}"
if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", NAME):
    print(f"name '{NAME}' must be lower-case letters, digits, '.', '_' or '-'", file=sys.stderr)
    sys.exit(1)
