"""comms-pipeline: business events in, personalised customer communications out.

The public Python API lives in :mod:`comms_pipeline.pipeline.triggers` (``trigger``); everything
else is reached through the ``comms`` command line.
"""

__version__ = "0.1.0"
