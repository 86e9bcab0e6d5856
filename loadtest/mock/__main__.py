"""``python -m loadtest.mock SETTINGS_JSON HOST PORT``: the mock as ``start_mock`` runs it.

Without the CLI: no typer, rich, tokenizers or scenario models to import, so a run or a test
starts its mock in about two thirds of the CPU that ``loadtest mock`` costs. The settings come
validated by the parent (one ``MockSettings`` model); errors are one line on stderr, exit 2.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from loadtest.config.mock import MockSettings, MockStartError
from loadtest.mock.process import run_mock


def main(argv: list[str]) -> int:
    try:
        settings = MockSettings.model_validate_json(argv[0])
        if (unset := settings.unset_key_env()) is not None:
            raise MockStartError(f"api_key_env: environment variable {unset} is not set")
        run_mock(settings, argv[1], int(argv[2]))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        print(f"error: {where + ': ' if where else ''}{first['msg']}", file=sys.stderr)
        return 2
    except (MockStartError, IndexError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
