"""cuberun: run MLCube cubes anywhere with one command."""

__version__ = "0.1.0"

__all__ = ["__version__"]
