"""Runs a Great Expectations suite on an Arrow table and reduces the result to what a run needs.

One ephemeral GE context per process (no project folder, nothing on disk), one pandas
datasource in it; each table is validated as a whole-dataframe batch. Great Expectations
and the suites are imported on first use: importing GE costs seconds, and every Ray worker
imports the pipeline modules that import this one.

A `SuiteResult` keeps GE's own result (JSON-able, saved with the run under
`qc/expectations/`) and one readable line per failed expectation.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from diffgen.dataset import storage
from diffgen.dataset.layout import expectations_file

if TYPE_CHECKING:
    import great_expectations as gx

_EXAMPLES = 5  # unexpected values and rows named per failed expectation
_GE_LOGGER = "great_expectations"


@dataclass(frozen=True)
class Failure:
    expectation: str  # GE's type, e.g. "expect_column_values_to_be_unique"
    column: str | None
    scope: str  # "table": the input as a whole is unusable; "row": some rows are
    line: str  # expectation, column, arguments, and a few unexpected values with their rows


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    failures: tuple[Failure, ...]
    result: dict[str, Any]  # GE's ExpectationSuiteValidationResult as JSON-able data

    @property
    def table_failures(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.scope == "table")

    def summary(self) -> dict[str, object]:
        """For the printed plan: outcome, counts and the failed expectations' lines."""
        return {
            "suite": self.suite,
            "success": self.success,
            "expectations": self.evaluated,
            "failed": [f.line for f in self.failures],
        }

    def to_json(self) -> dict[str, Any]:
        """What is saved with the run: the summary, each failure, and GE's full result."""
        return {
            **self.summary(),
            "failed": [vars(f) for f in self.failures],
            "great_expectations": self.result,
        }


@contextmanager
def _quiet() -> Iterator[None]:
    """GE logs at INFO on import and per validation; keep that out of a run's log unless someone
    set GE's level on purpose, and restore it afterwards."""
    logger = logging.getLogger(_GE_LOGGER)
    level = logger.level
    if level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def _batch_definition() -> Any:
    """The whole-dataframe batch definition of this process's one ephemeral context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("diffgen").add_dataframe_asset("table")
    return asset.add_batch_definition_whole_dataframe("whole")


def validate(table: pa.Table, suite: gx.ExpectationSuite, *, id_column: str | None = None) -> SuiteResult:
    """Validate `table` against `suite`; failed rows are named by `id_column` if the table has it, else by index.

    Only the columns the suite names (and `id_column`) are converted to pandas.
    """
    with _quiet():
        named = {getattr(e, "column", None) for e in suite.expectations} | {id_column}
        df = table.select([c for c in table.column_names if c in named]).to_pandas()
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES}
        if id_column in df.columns:
            result_format["unexpected_index_column_names"] = [id_column]
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        outcome = batch.validate(suite, result_format=result_format)
        data = outcome.to_json_dict()
    failures = tuple(_failure(r) for r in data["results"] if not r["success"])
    return SuiteResult(suite.name, bool(data["success"]), len(data["results"]), failures, data)


def validate_manifest_table(table: pa.Table, *, max_images_per_row: int | None = None) -> SuiteResult:
    """The manifest suite for this table's columns; failed rows named by their index, as in `check_rows`."""
    with _quiet():
        from diffgen.schemas.expectations import manifest_suite

        suite = manifest_suite(table.schema, max_images_per_row=max_images_per_row)
    return validate(table, suite)


def validate_index(index: pa.Table, expected_record_ids: Iterable[str]) -> SuiteResult:
    """The index suite: one row per expected record, known statuses, written rows with a sha256.

    Failed rows are named by `record_id`. Membership in the expected records is computed here,
    with Arrow, as the suite's `expected_record` column.
    """
    with _quiet():
        from diffgen.schemas.expectations import EXPECTED_RECORD, index_suite

        expected = pa.array(sorted(set(expected_record_ids)), pa.string())
        suite = index_suite(len(expected))
    if "record_id" in index.column_names:
        index = index.append_column(EXPECTED_RECORD, pc.is_in(index.column("record_id"), value_set=expected))
    return validate(index, suite, id_column="record_id")


def write_result(output: str, result: SuiteResult) -> str:
    """OUTPUT/qc/expectations/<suite>.json; the name is fixed, so a re-run overwrites it."""
    uri = storage.join(output, expectations_file(result.suite))
    storage.write_bytes(uri, json.dumps(result.to_json(), indent=2, sort_keys=True).encode())
    return uri


def _failure(r: dict[str, Any]) -> Failure:
    from diffgen.schemas.expectations import scope

    config = r["expectation_config"]
    kind, kwargs = config["type"], config["kwargs"]
    column = kwargs.get("column")
    head = kind + (f" on {column!r}" if column else "")
    args = _arguments(kwargs)
    if args:
        head += f" ({args})"
    return Failure(kind, column, scope(config.get("meta")), f"{head}: {_outcome(kind, r)}")


def _arguments(kwargs: dict[str, Any]) -> str:
    shown = []
    for key, value in kwargs.items():
        if key in ("batch_id", "column", "result_format"):
            continue
        if key == "row_condition" and isinstance(value, dict) and "column" in value:
            shown.append(f"where {value['column'].get('name')} {value.get('operator')} {value.get('parameter')!r}")
        else:
            shown.append(f"{key}={_short(value)}")
    return ", ".join(shown)


def _outcome(kind: str, r: dict[str, Any]) -> str:
    errors = _exception_messages(r.get("exception_info") or {})
    if errors:
        return "could not be evaluated: " + "; ".join(errors)
    result = r.get("result") or {}
    if "unexpected_count" in result:
        n, total = result["unexpected_count"], result.get("element_count")
        values = ", ".join(_short(v) for v in result.get("partial_unexpected_list", [])[:_EXAMPLES])
        text = f"{n} of {total} value(s) unexpected, e.g. {values}"
        where = _rows(result.get("partial_unexpected_index_list"), result.get("unexpected_index_column_names"))
        return f"{text} at {where}" if where else text
    if "observed_value" in result:
        return f"observed {_short(result['observed_value'])}"
    return "column is missing" if kind == "expect_column_to_exist" else "not met"


def _rows(index_list: Sequence[Any] | None, id_columns: Sequence[str] | None) -> str:
    if not index_list:
        return ""
    if id_columns:
        name = id_columns[0]
        return f"{name} " + ", ".join(_short(row.get(name)) for row in index_list[:_EXAMPLES])
    return "row(s) " + ", ".join(str(i) for i in index_list[:_EXAMPLES])


def _exception_messages(info: dict[str, Any]) -> list[str]:
    if "raised_exception" in info:  # one flat record
        return [str(info.get("exception_message"))] if info["raised_exception"] else []
    # one record per metric that failed to resolve; several often carry the same message
    messages = [str(v.get("exception_message")) for v in info.values() if v.get("raised_exception")]
    return list(dict.fromkeys(messages))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
