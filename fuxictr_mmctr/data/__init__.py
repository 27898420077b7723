"""Datasets: the data contract, synthetic data, validation, the item table and the loader."""
