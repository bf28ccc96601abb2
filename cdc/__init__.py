"""pgcast capture: reads row changes out of Postgres as ordered batches with positions.

This package never imports :mod:`broadcaster`. Its public contract lives in :mod:`cdc.changes`.
"""

from cdc.changes import Batch, Change, Column, Operation, Position

__all__ = ["Batch", "Change", "Column", "Operation", "Position"]
