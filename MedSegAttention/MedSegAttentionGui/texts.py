"""The module's help and acknowledgement texts (translatable, shown in Slicer's module help panel)."""

from slicer.i18n import tr as _


def helpText() -> str:
    return _(
        "Segment 3D CT and MR volumes with published attention networks and see the evidence each network "
        "used (attention masks, context residuals, saliency, and an uncertainty map from test-time mirroring) "
        "as heat maps whose legends say what the values mean. Ships ready to run with five left-atrium models for "
        "3D late-gadolinium-enhanced MR, one per network (compact SIP-Net, ANU-Net prunable L1-L4, ConResNet, the "
        "RA-UNet cascade and RSTN, trained on the LeftAtrium2018 data), so networks and their evidence can be compared on the same "
        "scan; the prostate, pancreas and liver models (SIP-Net, ConResNet, ANU-Net, RA-UNet, RSTN) run once their "
        "weights are installed. Each run makes a new segmentation in the input's study, or replaces the one chosen "
        "as Output. Inference runs in a separate process; Cancel stops it. Needs 3D Slicer 5.10 or later. "
        "For research use only, not for clinical decisions. "
        '<a href="https://github.com/MedSegAttention/MedSegAttention#readme">User guide</a>.'
    )


def acknowledgementText() -> str:
    return _(
        "Networks after: Zhu et al., Neural Computing and Applications 2020 (SIP-Net, arXiv:2010.04920); "
        "Zhang et al., IEEE TMI 2021 (ConResNet, doi:10.1109/TMI.2020.3034995); Li et al., Computers &amp; "
        "Graphics 2020 (ANU-Net, doi:10.1016/j.cag.2020.05.003); Jin et al., Frontiers in Bioengineering and "
        "Biotechnology 2020 (RA-UNet, doi:10.3389/fbioe.2020.605132); Yu et al., CVPR 2018 (RSTN, "
        "arXiv:1709.04518). Left-atrium data: Xiong et al., Medical Image Analysis 2021 (2018 Atrial "
        "Segmentation Challenge), as cropped by Yu et al., MICCAI 2019. Each model card lists its citation and licence."
    )
