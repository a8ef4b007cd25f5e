"""Nothing is lost: `groundwork serve` ingests 50 documents while a part is killed (SIGKILL)
in the middle, or while serve is stopped and started three times; every document ends
indexed, once, within the bound. `benchmarks/faults.py` prints the same figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import faults

DOCUMENTS = 50
BOUND_S = 300  # from the fault to the last document indexed


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", faults.FAULTS)
def test_every_document_is_indexed_once_after_the_fault(fault: str, tmp_path: Path):
    result = faults.run(fault, tmp_path, DOCUMENTS)
    assert result["mid_ingest"], result  # the fault came while documents were in flight
    assert result["settled"] and result["recovery_s"] < BOUND_S, result
    assert result["indexed"] == DOCUMENTS and result["failed"] == 0, result
    assert result["indexed_twice"] == 0, result
