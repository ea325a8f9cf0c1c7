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
