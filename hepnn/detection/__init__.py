"""Object detection in whole-event calorimeter images: jets as boxes in (eta, phi).

A single-shot detector (YOLO/SSD-like, Jet-SSD arXiv:2105.05785) divides the image of the whole
calorimeter (eta rows in ``[eta_low, eta_high]``, phi columns in ``[-pi, pi)`` rad, periodic) into
a coarse grid of cells; every cell predicts one box (objectness, centre offsets in its cell, log
widths relative to an anchor, class probabilities, pT and mass in GeV). A box is
``(eta, phi, w_eta, w_phi)``: its centre and full widths (``2R`` for a jet of radius R).

Pure torch (numpy for the figures over a whole test set), independent of Lightning and Hydra:

- :mod:`hepnn.detection.boxes`: phi wrapping, the grid, encoding truth boxes into per-cell
  regression targets and decoding dense predictions, IoU and Delta R with phi wrapping;
- :mod:`hepnn.detection.nms`: greedy non-maximum suppression of the boxes of many events at once,
  and the selection of the boxes of a batch of dense predictions at inference;
- :mod:`hepnn.detection.matching`: greedy matching of predictions to truth objects per event;
- :mod:`hepnn.detection.average_precision`: AP per class and mAP (PASCAL VOC all-point), efficiency
  and fake rate in bins of pT, pT and mass response of matched jets.
"""
