"""Pre-generation hook: stop, one line per problem, when an answer cannot be used.

The checks live in ws_template_extension.py (the one parser of the answers); the
extension's filter hands this script their result as JSON data.
"""

import json
import sys

PROBLEMS: list[str] = json.loads(r'''{{ cookiecutter | ws_answer_problems | tojson }}''')  # fmt: skip

if PROBLEMS:
    for problem in PROBLEMS:
        print(f"ws-template: {problem}", file=sys.stderr)
    sys.exit(1)
