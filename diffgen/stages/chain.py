"""The stage protocol and the check that a chain of stages is wired correctly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa

from diffgen.schemas.record import INDEX_COLUMNS, TRANSIENT_COLUMNS


@runtime_checkable
class Stage(Protocol):
    reads: tuple[str, ...]
    adds: tuple[str, ...]

    def setup(self) -> None: ...

    def __call__(self, batch: pa.Table) -> pa.Table: ...


def check_chain(columns: Iterable[str], stages: Sequence[Stage]) -> list[str]:
    """The columns after every stage has run; raises naming the first stage that lacks an input, or that
    adds a column neither the index schema nor the transient set declares (it would pass into the index
    as if it were a manifest column, and could overwrite a user's column of that name)."""
    available = list(columns)
    for stage in stages:
        undeclared = [c for c in stage.adds if c not in INDEX_COLUMNS and c not in TRANSIENT_COLUMNS]
        if undeclared:
            raise ValueError(f"stage {type(stage).__name__} adds {undeclared}, which the index schema does not declare")
        missing = [c for c in stage.reads if c not in available]
        if missing:
            raise ValueError(
                f"stage {type(stage).__name__} reads {missing}, which no earlier stage or the manifest provides"
            )
        available += [c for c in stage.adds if c not in available]
    return available
