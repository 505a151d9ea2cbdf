"""A real JupyterLab driven by headless Chromium, for the browser tests (and the docs' screenshots).

JupyterLab runs from this environment on a free port with a token, in a temporary root folder;
Chromium is Debian's package (``/usr/bin/chromium``) launched through Playwright's Python API: no
browser is ever downloaded. Widgets, kernels and files are the real ones.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import librosa
import pandas as pd
import soundfile as sf
import torch

from voicebook.coqui.base import resolve_base
from voicebook.core.paths import DEMO_DATA_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# JupyterLab settings for a quiet, deterministic page: no news or update pop-ups, every cell in
# the DOM (no windowing), no autosave racing the test.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}


def browser_available() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium package (scripts/setup.sh does)."
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed in this environment (see pyproject.toml)."
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(root: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A JupyterLab server over ``root``; yields its base URL. The server is stopped after."""
    port, token = free_port(), secrets.token_hex(16)
    settings = root.parent / f"{root.name}-lab-settings"
    (settings / "user").mkdir(parents=True, exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(LAB_SETTINGS))
    server_env = os.environ | (env or {})
    server_env |= {
        "JUPYTERLAB_SETTINGS_DIR": str(settings / "user"),
        "JUPYTERLAB_WORKSPACES_DIR": str(settings / "workspaces"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
        f"--LabApp.user_settings_dir={settings / 'user'}",
        f"--LabApp.app_settings_dir={settings}",
    ]  # fmt: skip
    log = (root.parent / f"{root.name}-lab.log").open("wb")
    server = subprocess.Popen(
        cmd, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {log.name}") from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/{{path}}?token={token}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A fresh headless Chromium page (Playwright), ``width`` x ``height`` CSS pixels."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


# --- driving a notebook ---------------------------------------------------------------------


class Notebook:
    """One notebook open in JupyterLab, driven through its menus like a person would."""

    def __init__(self, page, url: str):
        self.page = page
        page.goto(url)
        page.locator(".jp-Notebook").wait_for(timeout=60_000)
        self.wait_idle(timeout=90)
        time.sleep(1)  # a "Select Kernel" dialog may still pop up right after the start
        self.accept_kernel_dialog()

    def accept_kernel_dialog(self) -> None:
        """JupyterLab sometimes asks for the kernel although the notebook names one (a race
        while its session starts): accept the preselected "Python (voicebook)"."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
        deadline, clicked = time.monotonic() + 60, False
        # On a busy machine the first click can land before the button takes it: click again.
        while dialog.count() and dialog.first.is_visible():
            assert time.monotonic() < deadline, "JupyterLab's Select Kernel dialog stays open"
            try:
                dialog.locator(".jp-mod-accept").first.click(timeout=5_000)
                dialog.first.wait_for(state="detached", timeout=5_000)
            except PlaywrightTimeout:
                continue
            clicked = True
        if clicked:
            self.wait_idle(90)

    def command(self, menu: str, command: str) -> None:
        """Click ``menu`` in the menu bar, then the item that runs JupyterLab ``command`` (once
        it is enabled: right after loading, the notebook may not be the current widget yet)."""
        item = self.page.locator(f'.lm-Menu-item[data-command="{command}"]').first
        deadline = time.monotonic() + 30
        while True:
            self.page.locator(".lm-MenuBar-item", has_text=menu).first.click()
            item.wait_for(timeout=10_000)
            if "lm-mod-disabled" not in (item.get_attribute("class") or ""):
                item.click()
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{menu} > {command} stayed disabled")
            self.page.keyboard.press("Escape")
            time.sleep(1)

    def wait_idle(self, timeout: float = 300) -> None:
        """Until a kernel is started and idle, and no cell is queued or running."""
        deadline = time.monotonic() + timeout
        page = self.page
        while time.monotonic() < deadline:
            status = page.locator(".jp-Notebook-ExecutionIndicator").first
            idle = status.count() and status.get_attribute("data-status") == "idle"
            prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
            if idle and not any("*" in p for p in prompts):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the notebook was still running after {timeout} s")

    def run_all(self, timeout: float = 300) -> None:
        """Run > Run All Cells, then wait until every cell ran. Right after the kernel first
        reports idle, JupyterLab may drop the command: it is repeated until a cell starts."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        started = """() => [...document.querySelectorAll('.jp-InputArea-prompt')]
                          .some(p => /\\[[*0-9]/.test(p.textContent))"""
        for _ in range(12):
            self.accept_kernel_dialog()
            self.command("Run", "runmenu:run-all")
            try:
                self.page.wait_for_function(started, timeout=5_000)
                break
            except PlaywrightTimeout:
                continue
        else:
            raise TimeoutError("Run All Cells did not start any cell")
        self.wait_idle(timeout)

    def restart_kernel(self) -> None:
        self.command("Kernel", "kernelmenu:restart")
        self.page.locator(".jp-Dialog .jp-mod-accept").click()
        time.sleep(2)
        self.wait_idle(60)

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int, timeout: float = 120) -> None:
        """Select cell ``index`` (only it) and run it with Ctrl+Enter. Its code is clicked, as
        a dead listening panel's banner says: a click on the prompt would leave the focus on
        that panel, where no key reaches JupyterLab."""
        cell = self.cell(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+Enter")
        time.sleep(1)
        self.wait_idle(timeout)

    def output_area(self, index: int):
        return self.cell(index).locator(".jp-Cell-outputArea")

    def output_text(self, index: int) -> str:
        return self.output_area(index).inner_text()

    def code_cell_index(self, contains: str) -> int:
        """Index of the first cell whose source contains ``contains``."""
        for i, text in enumerate(self.page.locator(".jp-Notebook .jp-Cell").all()):
            if contains in text.locator(".jp-InputArea-editor").inner_text():
                return i
        raise LookupError(f"no cell contains {contains!r}")


# --- a cheap experiment to evaluate -----------------------------------------------------------


def prepare_experiment(folder: Path, n_train: int = 6, n_eval: int = 3) -> Path:
    """A dataset of demo clips in data prep's layout (two sources) and a phase-1 "best
    checkpoint" (the tiny base with its GPT perturbed), so that evaluation has two candidates
    without any training. Returns ``folder``."""
    dataset = folder / "dataset"
    (dataset / "wavs").mkdir(parents=True)
    meta = pd.read_csv(DEMO_DATA_DIR / "interview" / "metadata.csv", sep="|")
    lines = []
    for i, row in enumerate(meta.head(n_train + n_eval).itertuples()):
        source = "quiz" if i % 2 else "interview"
        name = f"wavs/{source}_{i:03d}.wav"
        wav, _ = librosa.load(DEMO_DATA_DIR / "interview" / row.audio_file, sr=22050)
        sf.write(dataset / name, wav, 22050)
        lines.append(f"{name}|{row.text}|demo")
    header = "audio_file|text|speaker_name"
    for split, rows in (("train", lines[:n_train]), ("eval", lines[n_train:])):
        (dataset / f"metadata_{split}.csv").write_text("\n".join([header, *rows]) + "\n")
    card = {"sources": [{"name": "interview"}, {"name": "quiz"}]}
    (dataset / "card.json").write_text(json.dumps(card))

    state = torch.load(resolve_base("tiny") / "model.pth", weights_only=False)["model"]
    generator = torch.Generator().manual_seed(0)
    for key, value in state.items():
        if key.startswith("gpt.") and value.is_floating_point():
            state[key] = value + 0.02 * torch.randn(value.shape, generator=generator)
    run = folder / "phase1" / "run"
    run.mkdir(parents=True)
    torch.save({"model": {f"xtts.{k}": v for k, v in state.items()}}, run / "best_model_12.pth")
    status = {"state": "finished", "best_checkpoint": str(run / "best_model_12.pth")}
    (folder / "phase1" / "status.json").write_text(json.dumps(status))
    return folder


def copy_notebook(name: str, root: Path) -> Path:
    from voicebook.core.paths import NOTEBOOKS_DIR

    root.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(NOTEBOOKS_DIR / name, root / name))
