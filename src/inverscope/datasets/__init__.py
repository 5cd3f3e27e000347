"""Campaigns, stores (Zarr), augmentation, readers and torch adapters."""
