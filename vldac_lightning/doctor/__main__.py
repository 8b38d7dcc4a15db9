"""``python -m vldac_lightning.doctor``: see :mod:`vldac_lightning.doctor`."""

import sys

from vldac_lightning.doctor import main

sys.exit(main())
