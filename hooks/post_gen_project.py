"""Post-generation hook: remove the files that the chosen framework does not use."""

import json
from pathlib import Path

FRAMEWORK: str = json.loads(r'''{{ cookiecutter.framework | tojson }}''')  # fmt: skip
PACKAGE: str = json.loads(r'''{{ cookiecutter.package_name | tojson }}''')  # fmt: skip

# Files that only one framework uses, relative to the package.
ONLY_FOR = {
    "fastapi": [
        "websocket/backend.py",
        "websocket/tests/sample_app.py",
        "websocket/tests/test_backend.py",
    ],
    "asgi": [
        "websocket/asgi.py",
        "websocket/asgi_backend.py",
        "websocket/tests/sample_asgi_app.py",
        "websocket/tests/test_asgi.py",
        "websocket/tests/test_asgi_backend.py",
    ],
}

for framework, paths in ONLY_FOR.items():
    if framework != FRAMEWORK:
        for path in paths:
            (Path(PACKAGE) / path).unlink()
