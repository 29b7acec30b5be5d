"""Screenshot every view of an inspection page in headless Chromium (apt-get install chromium):

    python scripts/screenshot_page.py PAGE.html [OUT_DIR]     # writes OUT_DIR/PAGE-surprise.png, -neurons, -attention

Views a model lacks fall back to the surprise view.
"""

import sys
from pathlib import Path

# scripts/inspect.py shares its name with the standard library's inspect: this folder leaves the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from charlm.errors import CharLMError  # noqa: E402
from charlm.insight.browser import screenshot  # noqa: E402
from charlm.insight.page import VIEWS  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    page = Path(argv[1])
    out = Path(argv[2]) if len(argv) == 3 else page.parent
    try:
        for view in VIEWS:
            print(screenshot(page, out / f"{page.stem}-{view}.png", view))
    except CharLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
