"""cuberun-htcondor: an HTCondor runner for cuberun, found through the cuberun.runners entry point."""

__version__ = "0.1.0"
