"""The columnar resume walk (`diffgen.dataset.resume.resume_state`) says exactly what the plain row-by-row
walk (`resume_reference`) says, on random outputs: several attempts per slot, every status, replaceable
or not, stale fingerprints, input images whose bytes changed or vanished, ControlNet inputs, rows of an
index made before slots existed, rows of other runs; and walking the slots in parts, then merging, is
the same as one walk."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from diffgen.dataset.resume import Attempts, merge_states, resume_state
from tests.diffgen.dataset import resume_reference
from tests.diffgen.dataset.resume_reference import (
    CONTROLS,
    JOB,
    fingerprint_fn,
    random_index,
    random_inputs_now,
    random_slots,
)  # fmt: skip


def _same(a, b) -> None:
    assert a.todo.column("record_id").to_pylist() == b.todo.column("record_id").to_pylist()
    assert a.todo.equals(b.todo)
    assert a.expected == b.expected
    assert a.changed == b.changed
    assert a.committed_slots == b.committed_slots


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 3), st.booleans(), st.booleans())
def test_the_columnar_walk_says_what_the_row_by_row_walk_says(seed, n, max_attempts, replace, retry_failed):
    rng = np.random.default_rng(seed)
    slots = random_slots(rng, n)
    index = random_index(rng, slots)
    read = random_inputs_now(rng).get
    attempts = Attempts(replace, max_attempts, retry_failed)
    args = (slots, index, JOB, CONTROLS, fingerprint_fn("now"), attempts)
    _same(resume_state(*args, read_sha256=read), resume_reference.resume_state(*args, read_sha256=read))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(1, 5))
def test_slots_walked_in_parts_and_merged_give_the_same_state(seed, n, parts):
    rng = np.random.default_rng(seed)
    slots = random_slots(rng, n)
    index = random_index(rng, slots)
    read = random_inputs_now(rng).get
    attempts = Attempts(True, 3, True)
    whole = resume_state(slots, index, JOB, CONTROLS, fingerprint_fn("now"), attempts, read_sha256=read)
    part_of = np.array([int(s[:4], 16) % parts for s in slots.column("slot_id").to_pylist()])
    states = [resume_state(slots.filter(pa.array(part_of == k)), index, JOB, CONTROLS, fingerprint_fn("now"), attempts,
                           read_sha256=read) for k in range(parts)]  # fmt: skip
    merged = merge_states(states)
    assert sorted(merged.todo.column("record_id").to_pylist()) == sorted(whole.todo.column("record_id").to_pylist())
    assert merged.expected == whole.expected
    assert merged.changed == whole.changed
    assert merged.committed_slots == whole.committed_slots


def test_a_changed_slot_is_named_by_its_latest_row_of_other_inputs():
    slots = random_slots(np.random.default_rng(1), 1)
    slot = slots.column("slot_id")[0].as_py()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    index = pa.Table.from_pylist([
        {"record_id": slot, "slot_id": slot, "status": "written", "fingerprint": "old", "prompt": "first",
         "created_at": at},
        {"record_id": slot, "slot_id": slot, "status": "rejected", "fingerprint": "older", "prompt": "second",
         "created_at": at + timedelta(seconds=1)},
    ])  # fmt: skip
    state = resume_state(slots, index, JOB, CONTROLS, fingerprint_fn("now"), read_sha256=lambda u: None)
    assert [c.field for c in state.changed] == ["prompt"]
    assert state.changed[0].was == "second"
    assert state.todo.column("record_id").to_pylist() == [slot]
    assert state.committed_slots == 1
