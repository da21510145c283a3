"""Datasets: adapters for the official files, frame discovery, mock datasets."""
