from trainer.join import Joiner


def test_label_before_score_and_score_before_label_both_join() -> None:
    j = Joiner(max_size=10, ttl_s=100)
    assert j.add_label("a", True, 0.0, 0, 1) is None
    joined = j.add_score("a", b"{}", 1.0, 2, 5)
    assert joined is not None and joined.is_fraud and joined.score_at == (2, 5)
    assert j.add_score("b", b"{}", 2.0, 0, 6) is None
    joined = j.add_label("b", False, 3.0, 1, 2)
    assert joined is not None and not joined.is_fraud and joined.label_at == (1, 2)
    assert len(j.scores) == len(j.labels) == 0


def test_buffer_is_bounded_by_size_and_time() -> None:
    j = Joiner(max_size=2, ttl_s=10)
    for i in range(3):
        j.add_score(f"s{i}", b"{}", float(i), 0, i)
    assert len(j.scores) == 2 and j.scores.evicted_full == 1
    assert j.scores.min_offsets() == {0: 1}
    j.expire(12.5)  # both remaining arrived at 1.0 and 2.0
    assert len(j.scores) == 0 and j.scores.evicted_expired == 2


def test_each_transaction_is_joined_once_and_conflicts_are_counted() -> None:
    j = Joiner(max_size=10, ttl_s=100)
    j.add_score("a", b"{}", 0.0, 0, 1)
    assert j.add_label("a", True, 1.0, 0, 1) is not None
    assert j.add_score("a", b"{}", 2.0, 0, 2) is None  # re-scored after a scorer crash
    assert j.add_label("a", True, 3.0, 0, 2) is None  # the same label again
    assert j.add_label("a", False, 4.0, 0, 3) is None  # a contradicting label
    assert (j.duplicate_scores, j.duplicate_labels, j.conflicting_labels) == (1, 1, 1)
    assert len(j.scores) == len(j.labels) == 0
    # Two contradicting labels before any score: the first stands.
    j.add_label("b", True, 5.0, 0, 4)
    j.add_label("b", False, 6.0, 0, 5)
    joined = j.add_score("b", b"{}", 7.0, 0, 6)
    assert joined is not None and joined.is_fraud is True and j.conflicting_labels == 2
