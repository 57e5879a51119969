"""Benchmarks: Table 5 memory and step time (``memory``), inference and training speed
(``speed``), convolution FLOPs and the practical peak (``flops``), process measurement
(``process``), and result tables and plots (``tables``)."""

from dmri_revgan.bench.flops import conv_flops, conv_peak_gflops
from dmri_revgan.bench.memory import MODES, SavedTensorMeter, memcnn_available, memory_benchmark
from dmri_revgan.bench.process import rss_bytes, run_in_subprocesses
from dmri_revgan.bench.speed import inference_rows, measure_inference, measure_training_speed
from dmri_revgan.bench.tables import markdown_table, speed_table, write_json, write_results

__all__ = [
    "MODES",
    "SavedTensorMeter",
    "conv_flops",
    "conv_peak_gflops",
    "inference_rows",
    "markdown_table",
    "measure_inference",
    "measure_training_speed",
    "memcnn_available",
    "memory_benchmark",
    "rss_bytes",
    "run_in_subprocesses",
    "speed_table",
    "write_json",
    "write_results",
]
