"""``python -m captum_vit`` runs the ``captum-vit`` command line."""

import sys

from .cli import main

sys.exit(main())
