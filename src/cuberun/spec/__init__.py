"""The cube specification: model, loader and interpolation. Knows no backend."""

from cuberun.spec.load import find_cube_file, load_cube
from cuberun.spec.model import Cube, Param, Task

__all__ = ["Cube", "Param", "Task", "find_cube_file", "load_cube"]
