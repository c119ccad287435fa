"""Per-stage latency benchmarks, side by side with the PyTorch reference path."""
