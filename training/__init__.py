"""Training package of MedSegAttention: everything needed to (re)train the five networks.

Modules, one job each:

* :mod:`training.data` - raw data sets in MSD / nnU-Net v2 layout (``dataset.json``, ``imagesTr``,
  ``labelsTr``), geometry checks, label mapping (e.g. prostate PZ + TZ -> gland) and seeded k-fold
  splits stored in ``splits.json``.
* :mod:`training.losses` - each paper's training loss (SIP-Net, ConResNet, ANU-Net, RA-UNet, RSTN)
  on the common :class:`MedSegAttentionLib.models.SegmentationOutput`, and ``build_loss(name)``.
* :mod:`training.metrics` - per-class Dice, IoU, VOE, RVD, HD95 and ASSD on label volumes with
  physical spacing, with defined behaviour for empty masks.

Planned next: recipes (per-network training configurations), the fit loop with DDP, export of
trained weights as model cards, and ``python -m training fit|evaluate``. Submodules are not imported
here, so ``import training`` stays cheap.
"""
