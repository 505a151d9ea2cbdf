"""Small stand-in stage notebooks for tests of the runner and the sweep (seconds, no models)."""

from pathlib import Path

import nbformat


def write_stub_notebook(path: Path, params: str, body: str) -> None:
    """A notebook on the voicebook kernel: a ``parameters`` cell, then ``body``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "voicebook",
        "display_name": "voicebook",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
