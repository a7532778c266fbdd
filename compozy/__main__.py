"""``python -m compozy``: the same as the ``compozy`` command."""

import sys

from compozy.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
