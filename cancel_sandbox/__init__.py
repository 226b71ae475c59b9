"""The local stand-ins for Connect and a vendor: mock marketplace, mock vendor, faults, the sandbox
and the demo.

Shipped in the same distribution for demos, development and tests; the processor imports nothing
from here.
"""
