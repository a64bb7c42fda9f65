"""The ``comms`` command line: thin shells over the core modules."""
