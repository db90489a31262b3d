"""Benchmarks: model throughput against timm (``throughput``) and the input pipeline (``data_pipeline``)."""
