"""The pyhost benchmark harness, driven by ``bench/run.py`` (standard library only)."""
