"""The rollout inspector: per-step trajectory samples on disk and a self-contained page to read them.

`samples.py` picks and writes samples during training (the trainer calls `SampleWriter.record_step`);
`records.py` turns one trajectory into a JSON record; `page.py` builds `inspector.html` from run
directories and serves it on localhost (`zerotir inspect`). Nothing here trains or runs a model.
"""

from zerotir.inspect.samples import SAMPLES_FILE, SampleWriter, read_samples, select_stratified

__all__ = ["SAMPLES_FILE", "SampleWriter", "read_samples", "select_stratified"]
