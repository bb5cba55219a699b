"""One benchmark result (`Record`: a model on a backend at a precision and batch size) and its statistics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields

from gpunet.timing import percentile


@dataclass
class Record:
    """Timings of one (model, backend, precision, batch), or why that combination was skipped."""

    model: str
    backend: str
    precision: str
    batch: int
    img_size: int
    threads: int
    device: str
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    peak_share: float | None = None
    macs: int | None = None
    top1: float | None = None
    repeats: int = 0
    skipped: bool = False
    reason: str = ""
    note: str = ""
    times_ms: list[float] = field(default_factory=list)

    def summarise(self, peak: float | None) -> None:
        """Fill the statistics from `times_ms`: latency percentiles, images/s, GFLOP/s and its share of `peak`."""
        t = self.times_ms
        self.repeats = len(t)
        self.median_ms = statistics.median(t)
        self.p90_ms = percentile(t, 90)
        self.p99_ms = percentile(t, 99)
        self.images_per_s = self.batch / (self.median_ms / 1e3)
        if self.macs is not None:
            self.gflops = 2.0 * self.macs * self.batch / (self.median_ms / 1e3) / 1e9
            if peak:
                self.peak_gflops = peak
                self.peak_share = self.gflops / peak


CSV_FIELDS = [f.name for f in fields(Record) if f.name != "times_ms"]
