"""What the Slicer module does to the MRML scene, without Qt; every function takes the scene.

* :mod:`.result`: read and check ``result.json`` (plain Python, no VTK).
* :mod:`.volumes`: NRRD files <-> volume nodes with exact IJK-to-RAS geometry (files are LPS).
* :mod:`.segmentation`: the label map as a segmentation node with named, coloured, coded segments.
* :mod:`.heatmaps`: evidence maps as scalar volumes with an Inferno heat-map display.
* :mod:`.hierarchy`: placing new nodes in the input's subject-hierarchy study.
* :mod:`.transaction`: removing everything a failed or cancelled run added.
* :mod:`.importer`: a whole result folder into the scene, all or nothing.

Imports ``slicer`` (MRML classes) and ``vtk``: inside Slicer these are Slicer's own; outside Slicer
they come from the ``slicer-core`` wheel.
"""

from .importer import ImportedResult, SceneResult, import_result, results_in_scene
from .result import ResultDescription, ResultFormatError, read_result
from .transaction import SceneTransaction
from .volumes import ijk_to_ras_array, load_volume, write_volume

__all__ = [
    "ImportedResult",
    "ResultDescription",
    "ResultFormatError",
    "SceneResult",
    "SceneTransaction",
    "ijk_to_ras_array",
    "import_result",
    "load_volume",
    "read_result",
    "results_in_scene",
    "write_volume",
]
