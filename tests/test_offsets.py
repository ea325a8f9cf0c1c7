from scorer.offsets import OffsetTracker


def test_offsets_commit_only_after_every_output_of_all_earlier_batches() -> None:
    t = OffsetTracker()
    a = t.open({("tx", 0): 10}, outputs=2)
    b = t.open({("tx", 0): 20, ("tx", 1): 5}, outputs=1)
    t.delivered(b)
    assert t.ready() == {}, "batch b is done but batch a is not: nothing may be committed"
    t.delivered(a)
    assert t.ready() == {}
    t.delivered(a)
    assert t.ready() == {("tx", 0): 20, ("tx", 1): 5}
    assert t.in_flight == 0 and len(t) == 0


def test_batch_without_outputs_is_immediately_committable() -> None:
    t = OffsetTracker()
    t.open({("tx", 3): 7}, outputs=0)
    assert t.ready() == {("tx", 3): 7}
