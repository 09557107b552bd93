"""vlcalc: the SVE vector-length set that every node of an arm64 KVM cluster accepts."""

__version__ = "0.1.0"
