"""One bundled model on one LA scan, repeated: run it with OMP_WAIT_POLICY=ACTIVE and =PASSIVE, idle and
beside another job, to see what busy-waiting threads cost (docs/benchmarks.md).

    for policy in ACTIVE PASSIVE; do for b in pytorch openvino; do OMP_WAIT_POLICY=$policy python benchmarks/thread_policy.py $b; done; done
"""

import os
import sys
import time
from pathlib import Path

from MedSegAttentionLib.modelstore.store import ModelStore
from MedSegAttentionLib.inference.engine import Predictor
from MedSegAttentionLib.inference.imageio import read_image
store = ModelStore(); card = store.card("sipnet-left-atrium-mr")
img = read_image(str(Path(__file__).resolve().parents[2] / "shared" / "data" / "LeftAtrium2018" / "imagesTr" / "la_38cws742.nii.gz"))
p = Predictor(card, store, "cpu", backend=sys.argv[1]); p.predict(img, maps=False)
ts=[]
for _ in range(3):
    t=time.perf_counter(); p.predict(img, maps=False); ts.append(time.perf_counter()-t)
print(sys.argv[1], os.environ.get("OMP_WAIT_POLICY","default"), "load %.1f" % os.getloadavg()[0], "min %.2f median %.2f" % (min(ts), sorted(ts)[1]))
