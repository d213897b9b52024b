"""Compatibility fixes for the OpenMMLab stack on current PyTorch / NumPy."""
