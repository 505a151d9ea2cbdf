"""The core every stage stands on: paths, the stage contract, run records, lineage and scraps,
atomic file writes, config from parameters, the device, live progress and the HTML page.

It imports nothing from the stages or the adapters (``tests/test_architecture.py`` checks).
"""
