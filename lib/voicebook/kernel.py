"""The Jupyter kernel 'voicebook' that notebooks, papermill and nbmake run on.

Its kernel spec (installed by scripts/setup.sh with ``python -m voicebook.kernel --install``)
starts ipykernel through ``main`` below, which drops one harmless log line: ipykernel's
"Kernel is running over TCP without encryption" warning, printed at every stage run. The kernel
binds to 127.0.0.1 only, its one client is the local papermill/JupyterLab process, and every
message is signed with the HMAC key of a connection file only the user can read; papermill offers
no way to provision CurveZMQ keys. Every other kernel message is left as it is.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

NAME = "voicebook"
DISPLAY_NAME = "Python (voicebook)"
UNENCRYPTED_TCP = "Kernel is running over TCP without encryption"


class _DropUnencryptedTcpWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(UNENCRYPTED_TCP)


def kernel_spec(python: str = sys.executable) -> dict:
    return {
        "argv": [
            python,
            "-Xfrozen_modules=off",
            "-m",
            "voicebook.kernel",
            "-f",
            "{connection_file}",
        ],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
        "kernel_protocol_version": "5.5",
    }


def install(prefix: str = sys.prefix) -> Path:
    """Write the kernel spec inside this environment (``--sys-prefix``), replacing an older one."""
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1) + "\n")
    return folder


def main() -> None:
    # As ipykernel_launcher does: the notebook's folder comes back with the shell's own path set-up.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    # Before initialize, which opens the sockets and logs the warning; traitlets keeps the same
    # logger object (logging.getLogger) when it configures logging, so the filter stays.
    app.log.addFilter(_DropUnencryptedTcpWarning())
    app.initialize(sys.argv[1:])
    app.start()


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        print(f"kernel spec '{NAME}' in {install()}")
    else:
        main()
