"""Training package of MedSegAttention: everything needed to (re)train the five networks.

Modules, one job each:

* :mod:`training.raw_dataset` - raw data sets in MSD / nnU-Net v2 layout (``dataset.json``, ``imagesTr``,
  ``labelsTr``; NIfTI, NRRD, MHA); :mod:`training.case_reading` - geometry checks and reading a case;
  :mod:`training.labels` - label mapping (e.g. prostate PZ + TZ -> gland, LiTS liver / tumour, any
  subset); :mod:`training.splits` - seeded k-fold splits stored in ``splits.json`` and reused.
* :mod:`training.losses` - each paper's training loss (SIP-Net, ConResNet, ANU-Net, RA-UNet, RSTN)
  on the common :class:`MedSegAttentionLib.models.SegmentationOutput`, and ``build_loss(name)``.
* :mod:`training.metrics` - per-class Dice, IoU, VOE, RVD, HD95 and ASSD on label volumes with
  physical spacing, with defined behaviour for empty masks.
* :mod:`training.recipes` - per-model YAML recipes (``training/recipes/*.yaml``) with ``--set``
  overrides; settings inference reads from the card (preprocessing, slice context, box margin) are
  taken from the card.
* :mod:`training.preprocessed` - each case on the model grid with the card's own preprocessing, cached
  per spec hash; :mod:`training.sampling` - MONAI sampling and step-indexed batches (deterministic,
  resumable, rank-sharded); :mod:`training.augmentation` - how scans arrive (3D rotation, zero-filled
  field of view, thick slices, bias field, gamma, noise).
* :mod:`training.loop` - the :class:`~training.loop.Trainer` (AMP on CUDA, clipping, checkpoints, validation, DDP);
  :mod:`training.schedules`, :mod:`training.checkpoint`, :mod:`training.distributed`,
  :mod:`training.validation` support it.
* :mod:`training.fold_export` / :mod:`training.evaluate` / :mod:`training.robustness` - model-card export
  and engine-based evaluation, also on padded and oblique thick-slice variants of each case.
* :mod:`training.cli` - ``python -m training``.

Submodules are not imported here, so ``import training`` stays cheap.
"""
