"""monai_shf.visualize: line charts, token strips, label colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_shf.visualize import label_rgb, line_chart, token_strip


def test_line_chart_draws_each_series_in_its_own_colour():
    chart = line_chart({"a": ([1, 2, 3], [0.1, 0.5, 0.9]), "b": ([1, 3], [0.9, 0.2])}, "t", "x", "y", size=(400, 300))
    assert chart.shape == (300, 400, 3) and chart.dtype == np.uint8
    colours = {tuple(c) for c in chart.reshape(-1, 3)}
    assert (0, 114, 178) in colours and (213, 94, 0) in colours  # the two first line colours
    blank = line_chart({"a": ([], [])}, size=(400, 300))

    def blue(img):
        return int((img == (0, 114, 178)).all(-1).sum())

    assert blue(chart) > blue(blank) + 100  # the blank chart has the legend swatch only, no line
    with pytest.raises(ValueError, match="same length"):
        line_chart({"a": ([1, 2], [1])})
    with pytest.raises(ValueError, match="size"):
        line_chart({"a": ([1], [1])}, size=(10, 10))


def test_token_strip_lays_tokens_out_in_reading_order():
    tokens = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1).expand(1, 6, 4, 4)
    mask = torch.tensor([True] * 5 + [False])
    strip = token_strip(tokens, mask, columns=3, gap=1)
    assert strip.shape == (2 * 5 - 1, 3 * 5 - 1, 3)
    assert strip[0, 0, 0] == 0 and strip[5, 5, 0] == 255  # token 0 darkest, token 4 brightest real one
    assert (strip[5, 10] == 160).all()  # padding token grey
    assert (strip[4, :] == 255).all()  # the gap row
    labels = token_strip(torch.ones(1, 2, 2, 2, 2), columns=2, labels=True)  # 3D tokens, middle slice
    assert (labels[0, 0] == label_rgb(np.ones((1, 1)))[0, 0]).all()
    with pytest.raises(ValueError, match="tokens must be"):
        token_strip(torch.zeros(6, 4, 4))
    with pytest.raises(ValueError, match="labels=True"):
        token_strip(torch.zeros(2, 6, 4, 4), labels=True)


def test_label_rgb_colours_classes_alike_in_2d_and_3d():
    labels = np.array([[0, 1], [2, 1]])
    rgb = label_rgb(labels)
    assert (rgb[0, 0] == 0).all() and (rgb[0, 1] == rgb[1, 1]).all() and not (rgb[1, 0] == rgb[0, 1]).all()
    volume = np.stack([labels] * 3, axis=-1)[None]
    assert np.array_equal(label_rgb(volume), rgb)
    with pytest.raises(ValueError, match="class indices"):
        label_rgb(np.full((2, 2), 0.5))
