"""The root of every exception fraudstream raises on purpose.

Each project exception derives from `FraudstreamError` and, where one fits, from the standard
exception it specialises (`SnapshotError(FraudstreamError, ValueError)`), so callers can catch
the project's failures as a whole or by their usual kind.
"""

from __future__ import annotations


class FraudstreamError(Exception):
    """A failure fraudstream reports on purpose (bad input, configuration, broker, registry)."""
