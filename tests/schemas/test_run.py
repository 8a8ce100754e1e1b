import pytest
from pydantic import ValidationError

from diffgen.schemas.run import RunCounts


def test_counts_must_reconcile():
    RunCounts(manifest_rows=2, images_expected=4, images_written=2, rejected=1, failed=1)
    with pytest.raises(ValidationError, match="do not reconcile"):
        RunCounts(manifest_rows=2, images_expected=4, images_written=2, rejected=1, failed=0)
