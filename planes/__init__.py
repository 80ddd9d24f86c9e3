"""The planes every kenpin process reaches: Kafka (frames, verdicts), Redis (control), S3 (blobs).

The clients, their connection settings and the process plumbing they share
(logging, the probe and metrics HTTP server) live here, so the worker, the
trainer, the console and the PLC bridge reach the plant the same way.
"""
