"""Jet detection in whole-event images: box encoding and decoding on the grid, IoU and Delta R with
phi wrapping, NMS, matching of predictions to truth, AP (VOC all-point), efficiency, fake rate
and response, all on hand-made boxes with values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from hepnn.detection.average_precision import (
    average_precision,
    average_precision_per_class,
    binned_fraction,
    common_response_figures,
    detection_figures,
    precision_recall,
    response,
    response_estimates,
)
from hepnn.detection.boxes import (
    DetectionGrid,
    assign_cells,
    decode,
    encode,
    pairwise_delta_r,
    pairwise_iou,
    stack_boxes,
    wrap_phi,
)
from hepnn.detection.matching import match
from hepnn.detection.nms import nms, select_boxes

PI = math.pi
GRID = DetectionGrid((-2.5, 2.5), n_eta=10, n_phi=16)  # cells of 0.5 in eta, pi/8 in phi


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --- phi, grid, encode and decode ---------------------------------------------------------------


def test_wrap_phi_into_minus_pi_pi():
    x = torch.tensor([0.0, PI, -PI, 3 * PI, -3 * PI - 0.5, 2 * PI + 0.25], dtype=torch.float64)
    expected = torch.tensor([0.0, -PI, -PI, -PI, PI - 0.5, 0.25], dtype=torch.float64)
    assert torch.allclose(wrap_phi(x), expected, atol=1e-12)
    tiny = torch.tensor([-PI - 1e-9, PI - 1e-9], dtype=torch.float32)  # rounds onto pi in float32
    out = wrap_phi(tiny)
    assert bool((out >= -PI).all() and (out < torch.tensor(PI, dtype=torch.float32)).all())


def test_grid_cells():
    assert GRID.cell_eta == pytest.approx(0.5) and GRID.cell_phi == pytest.approx(PI / 8)
    assert torch.allclose(GRID.eta_centres(torch.float64)[[0, 9]], boxes(-2.25, 2.25))
    assert torch.allclose(GRID.phi_centres(torch.float64)[[0, 15]], boxes(-PI + PI / 16, PI - PI / 16))
    assert DetectionGrid.from_mapping({"eta": [-1, 1], "n_eta": 4, "n_phi": 8, "phi": [-PI, PI]}) == (
        DetectionGrid((-1.0, 1.0), 4, 8)
    )
    with pytest.raises(ValueError, match="phi in"):
        DetectionGrid.from_mapping({"eta": [-1, 1], "n_eta": 4, "n_phi": 8, "phi": [0, 2 * PI]})
    with pytest.raises(ValueError, match="n_phi"):
        DetectionGrid((-1.0, 1.0), 4, 0)


def test_encode_cell_and_offsets_by_hand():
    # eta 0.1: (0.1 + 2.5) / 0.5 = 5.2 -> row 5, offset 0.2; phi = -pi + 3.25 pi/8 -> column 3, 0.25;
    # phi = 2 pi + that is the same; eta = -2.5 is row 0 offset 0; w = 0.8 on an anchor of 0.4 is log 2.
    phi = -PI + 3.25 * PI / 8
    out = encode(
        GRID,
        boxes(0.1, 0.1, -2.5),
        boxes(phi, phi + 2 * PI, 0.0),
        boxes(0.8, 0.4, 0.4),
        boxes(0.4, 0.4, 1.6),
        0.4,
    )
    assert out.i_eta.tolist() == [5, 5, 0] and out.i_phi.tolist() == [3, 3, 8]
    assert torch.allclose(out.offset_eta, boxes(0.2, 0.2, 0.0), atol=1e-12)
    assert torch.allclose(out.offset_phi, boxes(0.25, 0.25, 0.0), atol=1e-12)
    assert torch.allclose(out.log_w_eta, boxes(math.log(2), 0.0, 0.0), atol=1e-12)
    assert torch.allclose(out.log_w_phi, boxes(0.0, 0.0, math.log(4)), atol=1e-12)
    top = encode(GRID, boxes(2.5), boxes(0.0), boxes(1.0), boxes(1.0), (0.8, 0.8))  # eta_high: last row
    assert top.i_eta.tolist() == [9] and 0 < float(top.offset_eta[0]) < 1


def test_encode_outside_eta_range_names_the_box_and_range():
    with pytest.raises(ValueError, match=r"box 1 outside the grid's eta range \[-2.5, 2.5\].*eta = 2.6"):
        encode(GRID, boxes(0.0, 2.6), boxes(0.0, 0.0), boxes(0.8, 0.8), boxes(0.8, 0.8), 0.8)
    with pytest.raises(ValueError, match="box 0: widths must be positive"):
        encode(GRID, boxes(0.0), boxes(0.0), boxes(0.0), boxes(0.8), 0.8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_decode_round_trip(dtype):
    gen = torch.Generator().manual_seed(3)
    n = 500
    eta = (torch.rand(n, generator=gen, dtype=torch.float64) * 5 - 2.5).to(dtype)
    phi = (torch.rand(n, generator=gen, dtype=torch.float64) * 6 * PI - 3 * PI).to(dtype)  # unwrapped
    w_eta = (0.2 + 2 * torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)
    w_phi = (0.2 + 2 * torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)
    anchor = (0.8, 1.2)
    code = encode(GRID, eta, phi, w_eta, w_phi, anchor)
    assert bool(((code.offset_eta >= 0) & (code.offset_eta < 1)).all())
    assert bool(((code.offset_phi >= 0) & (code.offset_phi < 1)).all())
    # the cell holds the centre
    eta_low = GRID.eta_low + code.i_eta.to(torch.float64) * GRID.cell_eta
    assert bool(((eta >= eta_low - 1e-5) & (eta <= eta_low + GRID.cell_eta + 1e-5)).all())
    # each box in its own event, scattered into dense (n, n_eta, n_phi) tensors and decoded
    dense = [torch.zeros(n, *GRID.shape, dtype=dtype) for _ in range(4)]
    event = torch.arange(n)
    for target, value in zip(dense, code[2:], strict=True):
        target[event, code.i_eta, code.i_phi] = value
    out = decode(GRID, *dense, anchor)
    got = [v[event, code.i_eta, code.i_phi] for v in out]
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(got[0], eta, atol=tol)
    assert torch.allclose(wrap_phi(got[1] - phi), torch.zeros_like(phi), atol=tol)
    assert bool(((got[1] >= -PI) & (got[1] < PI)).all())
    assert torch.allclose(got[2], w_eta, rtol=tol) and torch.allclose(got[3], w_phi, rtol=tol)
    assert all(v.dtype == dtype for v in got)


def test_decode_of_a_zero_prediction_is_the_cell_corner_and_the_anchor():
    zeros = torch.zeros(2, *GRID.shape, dtype=torch.float64)
    eta, phi, w_eta, w_phi = decode(GRID, zeros, zeros + 0.5, zeros, zeros, (0.8, 0.4))
    assert eta.shape == (2, 10, 16)
    assert float(eta[1, 3, 0]) == pytest.approx(-2.5 + 3 * 0.5)
    assert float(phi[0, 0, 15]) == pytest.approx(-PI + 15.5 * PI / 8)
    assert float(w_eta.max()) == pytest.approx(0.8) and float(w_phi.min()) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="does not end in the grid"):
        decode(GRID, zeros[:, :5], zeros, zeros, zeros, 0.8)


def test_assign_cells_highest_priority_owns_a_shared_cell():
    # boxes 0 and 1 share a cell of event 0, box 2 is alone in event 1
    event = torch.tensor([0, 0, 1])
    eta, phi = boxes(0.1, 0.2, 0.1), boxes(0.05, 0.1, 0.05)
    width = boxes(0.8, 0.8, 0.8)
    out = assign_cells(GRID, event, eta, phi, width, width, 0.8, n_events=2, priority=boxes(10.0, 20.0, 5.0))
    assert out.owner.shape == (2, 10, 16) and out.n_collisions == 1
    assert out.owner[0, 5, 8].item() == 1 and out.owner[1, 5, 8].item() == 2
    assert int((out.owner >= 0).sum()) == 2
    assert float(out.offset_eta[0, 5, 8]) == pytest.approx(0.4)  # box 1: (0.2 + 2.5) / 0.5 = 5.4
    default = assign_cells(GRID, event, eta, phi, width, width, 0.8, n_events=2)
    assert default.owner[0, 5, 8].item() == 0  # ties and no priority: the lower index


# --- IoU and Delta R ----------------------------------------------------------------------------


def test_iou_hand_made_boxes():
    a = boxes((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 2.0, 2.0))
    b = boxes(
        (0.5, 0.0, 1.0, 1.0),  # half overlaps the unit box: 0.5 / 1.5
        (0.0, 0.0, 1.0, 1.0),  # the unit box itself; inside the 2x2 box: 1 / 4
        (1.0, 1.0, 2.0, 2.0),  # overlaps the 2x2 box by 1 x 1: 1 / 7, the unit box by 0.5 x 0.5: 0.25 / 4.75
        (3.0, 0.0, 1.0, 1.0),  # far away in eta
        (0.0, 2.0, 1.0, 1.0),  # far away in phi
    )
    # the half-shifted unit box lies inside the 2x2 box: 1 / 4
    expected = boxes((1 / 3, 1.0, 1 / 19, 0.0, 0.0), (0.25, 0.25, 1 / 7, 0.0, 0.0))
    assert torch.allclose(pairwise_iou(a, b), expected, atol=1e-12)
    assert torch.allclose(pairwise_iou(b, a), expected.T, atol=1e-12)


def test_iou_wraps_in_phi():
    # centres at pi - 0.1 and -pi + 0.1 are 0.2 apart; phi widths 0.4: overlap 0.2 x 1, union 0.6
    a = boxes((0.0, PI - 0.1, 1.0, 0.4))
    b = boxes((0.0, -PI + 0.1, 1.0, 0.4), (0.0, -PI + 0.5, 1.0, 0.4), (0.0, PI - 0.1, 1.0, 0.4))
    assert torch.allclose(pairwise_iou(a, b), boxes((1 / 3, 0.0, 1.0)), atol=1e-12)
    # a box as wide as the whole circle overlaps another wherever it is: 0.4 / (2 pi)
    full = boxes((0.0, 1.0, 1.0, 2 * PI))
    assert float(pairwise_iou(full, a)) == pytest.approx(0.4 / (2 * PI))


def test_iou_broadcasts_over_leading_dimensions():
    a = boxes((0.0, 0.0, 1.0, 1.0)).expand(3, 1, 4)
    b = boxes((0.5, 0.0, 1.0, 1.0), (9.0, 0.0, 1.0, 1.0)).expand(3, 2, 4)
    out = pairwise_iou(a, b)
    assert out.shape == (3, 1, 2) and torch.allclose(out, boxes((1 / 3, 0.0)).expand(3, 1, 2))


def test_delta_r_wraps_in_phi():
    eta_a, phi_a = boxes(0.0, 1.0), boxes(PI - 0.1, 0.0)
    eta_b, phi_b = boxes(0.0, 1.3), boxes(-PI + 0.1, 0.4)
    out = pairwise_delta_r(eta_a, phi_a, eta_b, phi_b)
    # (0, pi - 0.1) to (0, -pi + 0.1): 0.2 across the edge; to (1.3, 0.4): Delta phi = pi - 0.5;
    # (1, 0) to (0, -pi + 0.1): Delta phi = pi - 0.1; to (1.3, 0.4): hypot(0.3, 0.4) = 0.5
    expected = boxes((0.2, math.hypot(1.3, PI - 0.5)), (math.hypot(1.0, PI - 0.1), 0.5))
    assert torch.allclose(out, expected, atol=1e-12)


# --- NMS ----------------------------------------------------------------------------------------


def test_nms_keeps_the_higher_score_of_an_overlapping_pair_and_everything_else():
    b = boxes(
        (0.0, 0.0, 1.0, 1.0),  # 0: event 0, score 0.8
        (0.2, 0.0, 1.0, 1.0),  # 1: event 0, score 0.9, IoU with 0 = 0.8 / 1.2 = 2/3 -> suppresses 0
        (2.0, 0.0, 1.0, 1.0),  # 2: event 0, separate
        (0.0, 0.0, 1.0, 1.0),  # 3: event 1, same place as 0: other event, kept
        (0.0, PI - 0.1, 1.0, 0.4),  # 4: event 1
        (0.0, -PI + 0.05, 1.0, 0.4),  # 5: event 1, IoU with 4 (wrapping) = 0.25 / 0.55 -> suppressed
    )
    scores = boxes(0.8, 0.9, 0.3, 0.5, 0.7, 0.6)
    event = torch.tensor([0, 0, 0, 1, 1, 1])
    kept = nms(b, scores, event, iou_threshold=0.4)
    assert kept.tolist() == [1, 2, 4, 3]  # by event, then decreasing score
    assert nms(b, scores, event, iou_threshold=0.7).tolist() == [1, 0, 2, 4, 5, 3]  # 2/3, 0.45 < 0.7
    assert nms(b, scores, iou_threshold=0.4).tolist() == [1, 4, 2]  # one event: 3 under 1, 5 under 4


def test_nms_is_greedy_and_breaks_ties_by_index():
    # 0 suppresses 1 (IoU 1/3); 1 would suppress 2, but 1 is gone, so 2 stays (IoU(0, 2) = 0)
    b = boxes((0.0, 0.0, 1.0, 1.0), (0.5, 0.0, 1.0, 1.0), (1.0, 0.0, 1.0, 1.0))
    assert nms(b, boxes(0.9, 0.8, 0.7), iou_threshold=0.3).tolist() == [0, 2]
    # equal scores: the lower index ranks first, so 0 suppresses 1 and 2 stays
    assert nms(b, boxes(0.5, 0.5, 0.5), iou_threshold=0.3).tolist() == [0, 2]
    assert nms(b[[1, 0, 2]], boxes(0.5, 0.5, 0.5), iou_threshold=0.3).tolist() == [0]


def test_nms_class_aware_and_agnostic():
    b = boxes((0.0, 0.0, 1.0, 1.0), (0.1, 0.0, 1.0, 1.0), (0.2, 0.0, 1.0, 1.0))
    scores, classes = boxes(0.9, 0.8, 0.7), torch.tensor([0, 1, 0])
    assert nms(b, scores, classes=classes, iou_threshold=0.5).tolist() == [0]
    assert nms(b, scores, classes=classes, iou_threshold=0.5, class_aware=True).tolist() == [0, 1]
    with pytest.raises(ValueError, match="class_aware"):
        nms(b, scores, iou_threshold=0.5, class_aware=True)


def test_nms_by_delta_r():
    b = boxes((0.0, PI - 0.1, 0.8, 0.8), (0.0, -PI + 0.1, 0.8, 0.8), (0.5, PI - 0.1, 0.8, 0.8))
    scores = boxes(0.9, 0.8, 0.7)
    # Delta R(0, 1) = 0.2 across the phi edge, Delta R(0, 2) = 0.5
    assert nms(b, scores, delta_r_threshold=0.4).tolist() == [0, 2]
    assert nms(b, scores, delta_r_threshold=0.6).tolist() == [0]
    with pytest.raises(ValueError, match="exactly one"):
        nms(b, scores, iou_threshold=0.5, delta_r_threshold=0.4)
    assert nms(torch.zeros(0, 4), torch.zeros(0), iou_threshold=0.5).tolist() == []


def test_nms_many_events_in_chunks_equals_one_event_at_a_time():
    gen = torch.Generator().manual_seed(1)
    n = 400
    event = torch.randint(0, 37, (n,), generator=gen)
    centres = torch.rand(n, 2, generator=gen) * 2
    widths = torch.stack([0.5 + 0.5 * torch.rand(n, generator=gen), torch.full((n,), 0.8)], dim=1)
    b = torch.cat([centres, widths], dim=1).double()
    scores = torch.rand(n, generator=gen).double()
    together = nms(b, scores, event, iou_threshold=0.3, chunk_groups=5)
    alone = []
    for e in range(37):
        index = torch.nonzero(event == e).flatten()
        alone.append(index[nms(b[index], scores[index], iou_threshold=0.3)])
    assert together.tolist() == torch.cat(alone).tolist()


def test_select_boxes_from_dense_predictions():
    scores = torch.zeros(2, 4, 8, dtype=torch.float64)
    grid = DetectionGrid((-2.0, 2.0), 4, 8)
    eta, phi = grid.eta_centres(torch.float64), grid.phi_centres(torch.float64)
    dense_eta, dense_phi = eta[:, None].expand(4, 8), phi[None, :].expand(4, 8)
    width = torch.tensor(1.6, dtype=torch.float64)
    box = stack_boxes(dense_eta, dense_phi, width, width)
    box = box.expand(2, 4, 8, 4)
    scores[0, 1, 2], scores[0, 1, 3], scores[0, 3, 0] = 0.9, 0.8, 0.6  # (1, 3) overlaps (1, 2)
    scores[1, 0, 7], scores[1, 0, 0], scores[1, 2, 2] = 0.7, 0.65, 0.2  # (0, 7) next to (0, 0) across phi
    extras = {"pt": torch.arange(64.0).view(2, 4, 8), "probs": torch.rand(2, 3, 4, 8)}
    out = select_boxes(scores, box, extras=extras, score_threshold=0.5, iou_threshold=0.3)
    assert out.event.tolist() == [0, 0, 1] and out.counts.tolist() == [2, 1]
    assert out.cell.tolist() == [[1, 2], [3, 0], [0, 7]]
    assert out.score.tolist() == [0.9, 0.6, 0.7]
    assert out.extras["pt"].tolist() == [10.0, 24.0, 39.0]
    assert out.extras["probs"].shape == (3, 3)
    assert torch.equal(out.extras["probs"][2], extras["probs"][1, :, 0, 7])
    assert out.boxes[0].tolist() == pytest.approx([-0.5, -PI + 2.5 * PI / 4, 1.6, 1.6])
    top = select_boxes(scores, box, score_threshold=0.5, iou_threshold=0.99, max_per_event=1)
    assert top.cell.tolist() == [[1, 2], [0, 7]] and top.counts.tolist() == [1, 1]


# --- matching -----------------------------------------------------------------------------------


def test_match_each_truth_once_higher_score_first_threshold_and_events():
    truth = boxes((0.0, 0.0, 1.0, 1.0), (2.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0))
    true_event = torch.tensor([0, 0, 1])
    pred = boxes(
        (0.2, 0.0, 1.0, 1.0),  # 0: IoU 2/3 with truth 0, score 0.6
        (0.05, 0.0, 1.0, 1.0),  # 1: IoU 0.95/1.05 with truth 0, score 0.9: takes truth 0
        (2.6, 0.0, 1.0, 1.0),  # 2: IoU 0.4/1.6 = 0.25 with truth 1: below 0.5
        (2.0, 0.0, 1.0, 1.0),  # 3: event 1, where event 0's truth 1 is: nothing there
    )
    out = match(
        torch.tensor([0, 0, 0, 1]), boxes(0.6, 0.9, 0.8, 0.7), pred, true_event, truth, iou_threshold=0.5
    )
    assert out.pred_to_true.tolist() == [-1, 0, -1, -1]
    assert out.true_to_pred.tolist() == [1, -1, -1]
    assert float(out.quality[1]) == pytest.approx(0.95 / 1.05) and bool(torch.isnan(out.quality[0]))
    # at a lower threshold prediction 2 matches, and prediction 0 still loses truth 0
    low = match(
        torch.tensor([0, 0, 0, 1]), boxes(0.6, 0.9, 0.8, 0.7), pred, true_event, truth, iou_threshold=0.2
    )
    assert low.pred_to_true.tolist() == [-1, 0, 1, -1]
    # IoU exactly at the threshold matches
    exact = match(
        torch.zeros(1),
        boxes(1.0),
        boxes((0.5, 0.0, 1.0, 1.0)),
        torch.zeros(1),
        truth[:1],
        iou_threshold=1 / 3,
    )
    assert exact.pred_to_true.tolist() == [0]


def test_match_takes_the_best_unmatched_truth():
    truth = boxes((0.0, 0.0, 1.0, 1.0), (0.4, 0.0, 1.0, 1.0))
    pred = boxes((0.3, 0.0, 1.0, 1.0), (0.1, 0.0, 1.0, 1.0))
    # pred 0 (score 0.9): IoU 0.7/1.3 with truth 0, 0.9/1.1 with truth 1 -> truth 1;
    # pred 1: truth 1 taken, truth 0 (IoU 0.9/1.1) is left
    out = match(torch.zeros(2), boxes(0.9, 0.8), pred, torch.zeros(2), truth, iou_threshold=0.3)
    assert out.pred_to_true.tolist() == [1, 0] and out.true_to_pred.tolist() == [1, 0]
    # with the scores the other way round pred 1 takes truth 0 and pred 0 then truth 1: same pairs
    swapped = match(torch.zeros(2), boxes(0.8, 0.9), pred, torch.zeros(2), truth, iou_threshold=0.3)
    assert swapped.pred_to_true.tolist() == [1, 0]
    # only truth 0: the higher score (pred 0) wins it even with the lower IoU (0.7/1.3 < 0.9/1.1)
    one = match(torch.zeros(2), boxes(0.9, 0.8), pred, torch.zeros(1), truth[:1], iou_threshold=0.3)
    assert one.pred_to_true.tolist() == [0, -1]


def test_match_class_aware_and_delta_r():
    truth = boxes((0.0, PI - 0.05, 0.8, 0.8), (1.0, 0.0, 0.8, 0.8))
    pred = boxes((0.0, -PI + 0.05, 0.8, 0.8), (1.1, 0.1, 0.8, 0.8))
    kwargs = {"pred_class": torch.tensor([1, 0]), "true_class": torch.tensor([0, 0])}
    agnostic = match(
        torch.zeros(2), boxes(0.9, 0.8), pred, torch.zeros(2), truth, delta_r_threshold=0.2, **kwargs
    )
    assert agnostic.pred_to_true.tolist() == [0, 1]  # Delta R 0.1 across phi, 0.141
    assert agnostic.quality.tolist() == pytest.approx([0.1, math.hypot(0.1, 0.1)])
    aware = match(
        torch.zeros(2),
        boxes(0.9, 0.8),
        pred,
        torch.zeros(2),
        truth,
        delta_r_threshold=0.2,
        class_aware=True,
        **kwargs,
    )
    assert aware.pred_to_true.tolist() == [-1, 1]
    tight = match(
        torch.zeros(2), boxes(0.9, 0.8), pred[:, :2], torch.zeros(2), truth[:, :2], delta_r_threshold=0.12
    )
    assert tight.pred_to_true.tolist() == [0, -1]


def test_match_many_events_in_chunks_equals_one_event_at_a_time():
    gen = torch.Generator().manual_seed(2)
    n_pred, n_true = 300, 200
    pred_event, true_event = (
        torch.randint(0, 41, (n_pred,), generator=gen),
        torch.randint(0, 41, (n_true,), generator=gen),
    )
    centre = lambda n: torch.rand(n, 2, generator=gen).double() * 2  # noqa: E731
    pred = torch.cat([centre(n_pred), torch.full((n_pred, 2), 0.8, dtype=torch.float64)], dim=1)
    truth = torch.cat([centre(n_true), torch.full((n_true, 2), 0.8, dtype=torch.float64)], dim=1)
    score = torch.rand(n_pred, generator=gen).double()
    together = match(pred_event, score, pred, true_event, truth, iou_threshold=0.2, chunk_groups=4)
    expected = torch.full((n_pred,), -1)
    for e in range(41):
        p, t = torch.nonzero(pred_event == e).flatten(), torch.nonzero(true_event == e).flatten()
        one = match(torch.zeros(len(p)), score[p], pred[p], torch.zeros(len(t)), truth[t], iou_threshold=0.2)
        hit = one.pred_to_true >= 0
        expected[p[hit]] = t[one.pred_to_true[hit]]
    assert together.pred_to_true.tolist() == expected.tolist()
    matched = together.pred_to_true[together.pred_to_true >= 0]
    assert matched.unique().numel() == matched.numel()  # each truth at most once
    assert bool((pred_event[together.pred_to_true >= 0] == true_event[matched]).all())


# --- AP, efficiency, fake rate, response ------------------------------------------------------


def test_average_precision_by_hand():
    # 3 truths; ranked TP, FP, TP, FP: precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3.
    # Envelope 1 up to recall 1/3, 2/3 up to 2/3: AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 (third truth missed).
    scores, tp = [0.6, 0.9, 0.7, 0.8], [False, True, True, False]  # given out of order
    precision, recall = precision_recall(scores, tp, 3)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert average_precision(scores, tp, 3) == pytest.approx(5 / 9)
    # TP, FP, FP, TP, TP: precision 1, 1/2, 1/3, 1/2, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1;
    # the envelope lifts 1/2 at recall 2/3 to 3/5: AP = 1/3 + 1/3 * 3/5 + 1/3 * 3/5 = 11/15
    assert average_precision([5, 4, 3, 2, 1], [1, 0, 0, 1, 1], 3) == pytest.approx(11 / 15)
    assert average_precision([3, 2, 1], [1, 1, 1], 3) == 1.0
    assert average_precision([], [], 3) == 0.0
    assert math.isnan(average_precision([1.0], [False], 0))


def event_columns(rows, with_score):
    keys = ["event", "eta", "phi", "w_eta", "w_phi", "class", "pt", "mass"]
    if with_score:
        keys.insert(1, "score")
    return {key: np.array([row[k] for row in rows]) for k, key in enumerate(keys)}


def test_average_precision_per_class_through_matching():
    # class 0: 3 truths in two events; predictions (score order) TP, FP (duplicate), TP, FP (other
    # event's position) -> AP 5/9. Class 1: one truth, predicted exactly -> AP 1. A class-2
    # prediction has no truth: AP NaN, not in the mean. mAP = (5/9 + 1) / 2.
    truth = event_columns(
        [
            (0, 0.0, 0.0, 0.8, 0.8, 0, 100.0, 10.0),
            (0, 1.5, 2.0, 0.8, 0.8, 0, 80.0, 10.0),
            (1, -1.0, PI - 0.1, 0.8, 0.8, 0, 60.0, 10.0),
            (1, 1.0, 1.0, 0.8, 0.8, 1, 200.0, 170.0),
        ],
        with_score=False,
    )
    pred = event_columns(
        [
            (0, 0.9, 0.05, 0.0, 0.8, 0.8, 0, 100.0, 10.0),  # TP (truth 0)
            (0, 0.8, 0.0, 0.05, 0.8, 0.8, 0, 100.0, 10.0),  # FP: truth 0 taken
            (1, 0.7, -1.0, -PI + 0.1, 0.8, 0.8, 0, 60.0, 10.0),  # TP (truth 2, across phi)
            (1, 0.6, 1.5, 2.0, 0.8, 0.8, 0, 80.0, 10.0),  # FP: truth 1 is in event 0
            (1, 0.95, 1.0, 1.0, 0.8, 0.8, 1, 200.0, 170.0),  # TP class 1
            (1, 0.5, 1.0, 1.0, 0.8, 0.8, 2, 200.0, 170.0),  # class 2: no truth
        ],
        with_score=True,
    )
    ap = average_precision_per_class(pred, truth, iou_threshold=0.5)
    assert ap.classes.tolist() == [0, 1, 2]
    assert ap.ap[:2].tolist() == pytest.approx([5 / 9, 1.0]) and math.isnan(ap.ap[2])
    assert ap.n_truth.tolist() == [3, 1, 0] and ap.n_pred.tolist() == [4, 1, 1]
    assert ap.mean == pytest.approx((5 / 9 + 1) / 2)
    assert ap.as_dict()["ap_1"] == 1.0
    # perfect predictions: AP 1 for every class; no predictions: AP 0
    perfect = dict(truth, score=np.linspace(0.9, 0.6, 4))
    assert average_precision_per_class(perfect, truth).ap.tolist() == [1.0, 1.0]
    nothing = {key: value[:0] for key, value in pred.items()}
    empty = average_precision_per_class(nothing, truth)
    assert empty.ap.tolist() == [0.0, 0.0] and empty.mean == 0.0
    by_delta_r = average_precision_per_class(pred, truth, delta_r_threshold=0.3, classes=[0])
    assert by_delta_r.ap.tolist() == pytest.approx([5 / 9])


def test_binned_fraction_binomial_errors():
    out = binned_fraction(
        [30.0, 50.0, 70.0, 120.0, 500.0], [True, False, True, True, False], [0.0, 60.0, 200.0, 300.0]
    )
    assert out.total.tolist() == [2, 2, 0] and out.passed.tolist() == [1, 2, 0]
    assert out.fraction[:2].tolist() == [0.5, 1.0] and math.isnan(out.fraction[2])
    assert out.error[:2].tolist() == pytest.approx([math.sqrt(0.25 / 2), 0.0]) and math.isnan(out.error[2])
    assert out.overall == pytest.approx(3 / 5) and out.overall_error == pytest.approx(math.sqrt(0.24 / 5))


def test_response_median_and_half_width():
    # pred / true - 1 = -0.1, 0, 0.1, 0.2, 0.3; q16 = -0.1 + 0.64 * 0.1, q84 = 0.2 + 0.36 * 0.1
    true = np.array([100.0, 50.0, 10.0, 20.0, 40.0, 0.0])
    pred = np.array([90.0, 50.0, 11.0, 24.0, 52.0, 5.0])  # the last pair (true 0) is left out
    out = response(pred, true)
    assert out.n == 5 and out.bias == pytest.approx(0.1)
    assert out.resolution == pytest.approx((0.236 + 0.036) / 2)
    estimates = response_estimates(pred, true, pred, true, n_resamples=20)
    assert estimates["pt_bias"].value == pytest.approx(0.1) and estimates["mass_resolution"].error > 0


def test_detection_figures_efficiency_fake_rate_response():
    # event 0: truths of pT 30 and 100; predictions: one on the 100 GeV jet (score 0.9, pT 110),
    # one fake (0.8, pT 40), one below the score threshold on the 30 GeV jet (0.3: not counted).
    # event 1: truth of 250 GeV found (0.7, pT 225, mass 90 for 100). Bins [0, 50, 150, 300].
    truth = event_columns(
        [
            (0, 0.0, 0.0, 0.8, 0.8, 0, 30.0, 5.0),
            (0, 1.0, 2.0, 0.8, 0.8, 0, 100.0, 20.0),
            (1, 0.0, -PI, 0.8, 0.8, 1, 250.0, 100.0),
        ],
        with_score=False,
    )
    pred = event_columns(
        [
            (0, 0.9, 1.0, 2.0, 0.8, 0.8, 0, 110.0, 22.0),
            (0, 0.8, -2.0, -2.0, 0.8, 0.8, 0, 40.0, 5.0),
            (0, 0.3, 0.0, 0.0, 0.8, 0.8, 0, 30.0, 5.0),
            (1, 0.7, 0.0, PI - 0.02, 0.8, 0.8, 0, 225.0, 90.0),  # wrong class: still matched for efficiency
        ],
        with_score=True,
    )
    out = detection_figures(pred, truth, [0.0, 50.0, 150.0, 300.0], score_threshold=0.5)
    assert out.efficiency.passed.tolist() == [0, 1, 1] and out.efficiency.total.tolist() == [1, 1, 1]
    assert out.efficiency.overall == pytest.approx(2 / 3)
    assert out.fake_rate.passed.tolist() == [1, 0, 0] and out.fake_rate.total.tolist() == [1, 1, 1]
    assert out.fake_rate.overall == pytest.approx(1 / 3)
    assert out.pred_to_true.tolist() == [1, -1, -1, 2] and out.true_to_pred.tolist() == [-1, 0, 3]
    # pT response +0.1 and -0.1: median 0; mass +0.1 and -0.1 likewise; half-width of two values
    assert out.pt_response.n == 2 and out.pt_response.bias == pytest.approx(0.0)
    assert out.pt_response.resolution == pytest.approx(0.68 * 0.2 / 2)
    summary = out.summary()
    assert summary["efficiency"] == pytest.approx(2 / 3) and summary["fake_rate"] == pytest.approx(1 / 3)
    # class-aware AP: class 0 has 2 truths; ranked 0.9 TP, 0.8 FP, 0.7 FP (class 0, no class-0
    # truth there), 0.3 TP: AP = 1/2 * 1 + 1/2 * 2/4 = 3/4; class 1 has no prediction: 0
    assert out.average_precision.ap.tolist() == pytest.approx([0.75, 0.0])
    assert summary["map"] == pytest.approx(0.375)


def test_resolutions_of_two_reconstructions_are_taken_on_the_jets_both_found():
    # the detector (score >= 0.5) finds the 100 and 250 GeV truths; the baseline finds all three
    truth = event_columns(
        [
            (0, 0.0, 0.0, 0.8, 0.8, 0, 30.0, 5.0),
            (0, 1.0, 2.0, 0.8, 0.8, 0, 100.0, 20.0),
            (1, 0.0, -PI, 0.8, 0.8, 1, 250.0, 100.0),
        ],
        with_score=False,
    )
    detector = event_columns(
        [
            (0, 0.9, 1.0, 2.0, 0.8, 0.8, 0, 110.0, 22.0),
            (0, 0.3, 0.0, 0.0, 0.8, 0.8, 0, 30.0, 5.0),  # below the score threshold
            (1, 0.7, 0.0, PI - 0.02, 0.8, 0.8, 1, 225.0, 90.0),
        ],
        with_score=True,
    )
    baseline = event_columns(
        [
            (0, 0.1, 0.05, 0.0, 0.8, 0.8, 0, 33.0, 5.0),
            (0, 0.1, 1.0, 2.05, 0.8, 0.8, 0, 105.0, 20.0),
            (1, 0.1, 0.0, -PI + 0.01, 0.8, 0.8, 1, 260.0, 100.0),
        ],
        with_score=True,
    )
    found, anti_kt = common_response_figures([detector, baseline], truth, [0.5, 0.0], delta_r_threshold=0.4)
    assert found["n_common"] == anti_kt["n_common"] == 2
    # detector: +0.1 and -0.1; baseline on the same two jets: +0.05 and +0.04 (its +0.1 on the
    # 30 GeV jet the detector missed is left out)
    assert found["pt_bias"] == pytest.approx(0.0) and found["pt_resolution"] == pytest.approx(0.68 * 0.2 / 2)
    assert anti_kt["pt_bias"] == pytest.approx(0.045)
    assert anti_kt["pt_resolution"] == pytest.approx(0.68 * 0.01 / 2)
    assert anti_kt["mass_bias"] == pytest.approx(0.0)
