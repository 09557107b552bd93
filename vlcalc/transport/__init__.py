"""How vlcalc runs a command on a node: over SSH (paramiko) or locally (subprocess)."""
