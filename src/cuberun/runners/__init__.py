"""Runners: one module per backend, found through the `cuberun.runners` entry points."""
