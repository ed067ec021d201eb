"""The one place whylogs is imported from.

whylogs 1.6.4 (its last release) still uses ``numpy.unicode_``, which numpy 2 removed; Feast
0.67 needs numpy >= 2, so the alias is put back before whylogs is imported (the only removed
alias its code uses). ``WHYLOGS_NO_ANALYTICS`` turns off its usage telemetry, which would
otherwise try to reach the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def import_whylogs() -> ModuleType:
    """``whylogs``, importable under numpy 2 and without telemetry."""
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    import numpy

    if not hasattr(numpy, "unicode_"):
        numpy.unicode_ = numpy.str_
    import whylogs

    return whylogs


def write_profile(frame: pd.DataFrame, path: Path) -> Path:
    """Profile ``frame`` and write the binary profile view to ``path`` (read back with
    ``read_profile``)."""
    why = import_whylogs()
    path.parent.mkdir(parents=True, exist_ok=True)
    why.log(frame).view().write(str(path))
    return path


def read_profile(path: Path) -> object:
    """The ``DatasetProfileView`` written by ``write_profile``."""
    why = import_whylogs()
    return why.read(str(path)).view()
