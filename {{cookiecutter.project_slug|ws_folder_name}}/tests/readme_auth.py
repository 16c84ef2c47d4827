"""The app with README.md's worked ``auth.py`` example: its code block, run as written.

``SESSION_TOKENS="alice=token-a,bob=token-b"`` in the environment lets in the clients whose
``session`` cookie is one of the tokens, as those users; the presence tests use it to show
that what ``authenticate`` returns is who a presence list shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.app import create_app

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = re.compile(r"```python\n# auth\.py\n(.*?)```", re.DOTALL)


def readme_authenticate() -> Any:
    """The ``authenticate`` of README.md's example, defined as if it were ``auth.py``."""
    found = EXAMPLE.search(README.read_text(encoding="utf-8"))
    assert found is not None, "README.md has no ```python block starting with # auth.py"
    namespace: dict[str, Any] = {
        "__name__": "{{ cookiecutter.package_name }}.auth",
        "__package__": "{{ cookiecutter.package_name }}",
    }
    exec(compile(found.group(1), str(README), "exec"), namespace)
    return namespace["authenticate"]


app = create_app(readme_authenticate())
