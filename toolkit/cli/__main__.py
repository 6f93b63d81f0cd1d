"""``python -m toolkit.cli``: the golden CLI, for children golden starts itself (the nightly's boot server)."""

import sys

from toolkit.cli import main

sys.exit(main())
