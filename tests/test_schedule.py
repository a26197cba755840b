import pytest

from captioning.lit.schedule import warmup_cosine


def test_warmup_rises_linearly_then_cosine_falls_to_the_floor():
    assert [warmup_cosine(step, 4, progress=0.0) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_cosine(10, 4, progress=0.5, floor=0.1) == pytest.approx(0.55)
    assert warmup_cosine(10, 4, progress=1.0, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(10, 4, progress=1.7) == pytest.approx(0.0)  # past the budget: stays at the floor
    assert warmup_cosine(0, 0, progress=0.0) == 1.0  # no warm-up
