"""Counts in messages agree with their nouns ("1 epoch", never "1 epochs")."""

from __future__ import annotations


def test_counts_agree_with_their_nouns():
    from cnnzoo.train.config import TrainConfig
    from cnnzoo.words import plural

    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs"
    assert plural(0.5, "epoch") == "0.5 epochs" and plural(12000, "image") == "12,000 images"
    assert plural(3, "child", "children") == "3 children"
    assert (
        "1 epoch," in TrainConfig(epochs=1).describe() and "1 epochs" not in TrainConfig(epochs=1).describe()
    )
