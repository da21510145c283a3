"""Benchmarks: speed, accuracy and memory of mespot's pipeline stages (`make bench`)."""
