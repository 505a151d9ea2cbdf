"""``voicebook listen``: the blind listening panel as a plain web page per rater, through Voilà.

People who know the speaker are the best judges, and they do not run JupyterLab. This serves one
page, the panel and nothing else, to each rater's own link (``?token=…``):

- **Tokens.** Each rater gets a random token, kept in the experiment's ``listening_links.json``
  (readable by its owner only), so a link once sent stays valid when the server restarts. A
  request without a valid token is refused with 403 before any kernel starts (Voilà's
  ``prelaunch_hook``), and the page's kernel checks the token again from ``QUERY_STRING``.
- **Isolation.** The rater's name comes from the token, never from the page: the served panel
  has no name field, and Voilà forwards only widget messages to a kernel (no code runs from
  the page), so one link can neither read nor change another rater's ratings. A rating outside
  the scale is refused where it is saved (``ListeningSession.record_scores``).
- **Blind on the wire.** The page's cells are stripped from the HTML; no file is served (the
  allow-list is empty); every clip travels inside the widget state as a fresh WAV (``panel``)
  with no file name, no tag and one length per sentence; no candidate name is in any widget.
- **Light.** A rater's kernel imports the panel and the ratings store only: no torch.
- **No rating lost.** Every kernel appends to the experiment's ``ratings.csv`` under its file
  lock (``session``); the evaluation's summary cell and the decision report read that file.

Only 127.0.0.1 unless ``--host`` says otherwise: tunnel from a GPU host with SSH
(``docs/listening.md``).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from voicebook.core.fileio import write_json_atomic
from voicebook.core.paths import outputs_root
from voicebook.evaluation.listening.panel import listening_panel, refusal
from voicebook.evaluation.listening.session import check_rater_name, load_samples

LINKS_FILE = "listening_links.json"  # in the experiment folder: rater -> token
CONFIG_ENV = "VOICEBOOK_LISTEN_CONFIG"  # the served page's settings, for the raters' kernels
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
INVALID_LINK = (
    "This link is not valid (its token is missing or wrong). Ask the person who sent it for "
    "your own link."
)
PAGE_SOURCE = (
    "from voicebook.evaluation.listening.serve import rater_page\n\n"
    "rater_page()  # the panel of this link's rater"
)


def rater_tokens(experiment: Path, raters: list[str]) -> dict[str, str]:
    """Each of ``raters``' token (a new one for a new rater), kept in ``LINKS_FILE`` so that a
    link already sent stays valid. Raises ValueError for a name that cannot be used."""
    names = [check_rater_name(r) for r in raters]
    if len(set(names)) != len(names):
        raise ValueError(f"A rater is named twice in {names}: give each rater once.")
    file = experiment / LINKS_FILE
    known: dict[str, str] = json.loads(file.read_text()) if file.is_file() else {}
    tokens = {name: known.get(name) or secrets.token_urlsafe(18) for name in names}
    if any(name not in known for name in names):
        write_json_atomic(file, {**known, **tokens})
        file.chmod(0o600)  # the tokens are the raters' keys
    return tokens


def rater_for(query: str, tokens: dict[str, str]) -> str | None:
    """The rater whose token ``query`` (a URL's query string) carries, or None."""
    given = parse_qs(query).get("token", [""])[0]
    for rater, token in tokens.items():
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return rater
    return None


def rater_page() -> Any:
    """What a rater's page shows (the served notebook's only cell): the panel for the rater
    whose token the page's address carries, else only a note that the link is not valid."""
    config = json.loads(Path(os.environ[CONFIG_ENV]).read_text())
    rater = rater_for(os.environ.get("QUERY_STRING", ""), config["tokens"])
    if rater is None:
        return refusal(INVALID_LINK)
    exp = Path(config["experiment"])
    samples = load_samples(exp / "eval")
    return listening_panel(exp / "ratings.csv", samples, seed=exp.name, rater=rater)


def refuse_without_token(tokens: dict[str, str]):
    """Voilà's prelaunch hook: a request without a valid token gets 403, and no kernel."""
    from tornado.web import HTTPError

    def hook(handler: Any, notebook: Any = None, cwd: str = "") -> None:
        if rater_for(handler.request.query, tokens) is None:
            raise HTTPError(403, reason="Not a valid rater link")

    return hook


def write_page(folder: Path, experiment: Path, tokens: dict[str, str]) -> Path:
    """The served notebook (one cell: ``rater_page()``) and its settings, in ``folder``."""
    import nbformat

    config = folder / "listen.json"
    config.write_text(json.dumps({"experiment": str(experiment), "tokens": tokens}))
    config.chmod(0o600)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PAGE_SOURCE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    page = folder / "listening.ipynb"
    nbformat.write(notebook, page)
    return page


def links(host: str, port: int, tokens: dict[str, str]) -> dict[str, str]:
    """Each rater's address."""
    shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return {rater: f"http://{shown}:{port}/?token={token}" for rater, token in tokens.items()}


def voila_app(page: Path, host: str, port: int, tokens: dict[str, str]):
    """A Voilà application serving ``page`` alone: sources stripped, no files, no browser,
    one port (a busy port is an error, not another port the links would not name)."""
    from traitlets.config import Config
    from voila.app import Voila

    config = Config()
    config.Voila.ip, config.Voila.port, config.Voila.port_retries = host, port, 0
    config.Voila.open_browser = False
    config.Voila.root_dir = str(page.parent)
    config.VoilaConfiguration.strip_sources = True
    config.VoilaConfiguration.show_tracebacks = False
    config.VoilaConfiguration.file_allowlist = []
    config.VoilaConfiguration.prelaunch_hook = refuse_without_token(tokens)
    config.MappingKernelManager.cull_idle_timeout = 2 * 3600  # a page left open for hours
    config.MappingKernelManager.cull_interval = 300
    app = Voila(config=config)
    app.initialize([str(page)])
    return app


def serve(experiment: Path, raters: list[str], host: str, port: int) -> None:
    """Print each rater's link and serve their pages until interrupted."""
    samples = load_samples(experiment / "eval")
    if not samples:
        raise ValueError(
            f"No synthesised samples in {experiment / 'eval'}: run 03_evaluation on this "
            "experiment first."
        )
    missing = sorted({str(s.wav) for s in samples if not s.wav.is_file()})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} samples listed in {experiment / 'eval' / 'samples.csv'} are "
            f"missing, e.g. {missing[0]}: re-run 03_evaluation on this experiment."
        )
    tokens = rater_tokens(experiment, raters)
    if host not in LOCAL_HOSTS:
        print(
            f"Warning: serving on {host}, not only this machine: anyone who reaches port "
            f"{port} with a link can rate, over plain HTTP (not encrypted). An SSH tunnel to "
            "127.0.0.1 is safer (docs/listening.md).",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="voicebook-listen-") as folder:
        page = write_page(Path(folder), experiment, tokens)
        os.environ[CONFIG_ENV] = str(Path(folder) / "listen.json")
        app = voila_app(page, host, port, tokens)
        print(f"Blind listening test of {experiment.name}: one link per rater.")
        for rater, link in links(host, port, tokens).items():
            print(f"  {rater}: {link}")
        print("Ratings go to", experiment / "ratings.csv", "(Ctrl+C stops the server).")
        sys.stdout.flush()
        app.start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``voicebook listen``'s arguments."""
    parser.add_argument("--experiment", required=True, help="the experiment whose samples to rate")
    parser.add_argument("--raters", nargs="+", default=[], metavar="NAME",
                        help="one link each (default: the raters of earlier links)")  # fmt: skip
    parser.add_argument(
        "--host", default="127.0.0.1", help="address (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8866, help="port (default 8866)")
    parser.add_argument(
        "--outputs-dir", default="", help="folder of experiments (default: outputs)"
    )


def command(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit 2 for a wrong request."""
    try:
        experiment = outputs_root(args.outputs_dir or None) / args.experiment
        if not experiment.is_dir():
            raise FileNotFoundError(f"No experiment {args.experiment!r}: {experiment} is missing.")
        raters = args.raters or list(_known_raters(experiment))
        if not raters:
            raise ValueError("Name the raters: voicebook listen --experiment NAME --raters ann bob")
        serve(experiment, raters, args.host, args.port)
    except (ValueError, FileNotFoundError) as exc:
        print(f"voicebook listen: {exc}", file=sys.stderr)
        return 2
    return 0


def _known_raters(experiment: Path) -> dict[str, str]:
    file = experiment / LINKS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}
