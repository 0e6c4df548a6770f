"""Draw the 128x128 icon (an axial slice with an Inferno heat map and a segment outline).

It is written twice: the module's icon (MedSegAttention/Resources/Icons, Slicer's module convention)
and the extension's icon (Resources/Icons, named by EXTENSION_ICONURL in the top-level CMakeLists.txt).
Run: python Testing/slicer/make_icon.py  (needs numpy and matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SIZE = 128


REPO = Path(__file__).resolve().parents[2]
TARGETS = (REPO / "MedSegAttention" / "Resources" / "Icons" / "MedSegAttention.png",
           REPO / "Resources" / "Icons" / "MedSegAttention.png")


def main() -> list[Path]:
    y, x = np.mgrid[-1:1:SIZE * 1j, -1:1:SIZE * 1j]
    body = ((x / 0.85) ** 2 + (y / 0.7) ** 2) < 1
    organ = (((x + 0.2) / 0.38) ** 2 + ((y + 0.05) / 0.3) ** 2) < 1
    heat = np.exp(-(((x + 0.25) ** 2 + (y + 0.1) ** 2) / 0.05))
    grey = np.where(body, 0.35 + 0.15 * organ, 0.0)

    fig = plt.figure(figsize=(1, 1), dpi=SIZE)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    ax.imshow(np.ma.masked_less(heat * body, 0.08), cmap="inferno", vmin=0, vmax=1, alpha=0.85)
    ax.contour(organ.astype(float), levels=[0.5], colors=["#3fd16b"], linewidths=1.6)
    ax.set_axis_off()
    for out in TARGETS:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=SIZE, facecolor="black")
    plt.close(fig)
    return list(TARGETS)


if __name__ == "__main__":
    print(main())
