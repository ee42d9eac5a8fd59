"""Console logging: progress and results by default, details with `-v`.

Third-party libraries add their own noise: Lightning attaches a console handler to its `lightning`
logger *and* lets records propagate to the root handler (every line printed twice), logs an
advertisement for its cloud logger on every `Trainer`, and torch's pytree warns that Lightning uses a
deprecated class. `quiet_lightning` removes all three (the details stay available with `-v`).
"""

from __future__ import annotations

import logging
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ADVERT_PREFIXES = ("💡 Tip:",)  # Lightning's pointers to its paid services, not about this run


def setup_logging(verbose: bool = False) -> None:
    """Root logging for the command line: INFO (DEBUG with `verbose`), one line per record."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, datefmt="%H:%M:%S")


def verbose() -> bool:
    """True when the root logger shows debug records (`fish-speech -v`)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERT_PREFIXES)


def quiet_lightning() -> None:
    """Call after importing lightning: each of its lines once, its INFO lines only with `-v`, no adverts."""
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # each sets its own level
        logger = logging.getLogger(name)
        if root.handlers:  # the root handler prints them: Lightning's own console handler repeats them
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler):
                    logger.removeHandler(handler)
            logger.propagate = True
        logger.setLevel(logging.DEBUG if verbose() else logging.WARNING)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    if not verbose():
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
        )
