"""``voicebook listen`` in a real browser: two raters' pages at once through Voilà, rated by
clicks, one reloaded mid-way; every byte the browser receives is searched for what would
unblind the test; the ratings on disk and the report are checked after.

The experiment is faked (short tagged WAVs and a ``samples.csv``): no training, no synthesis.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from jupyter_browser import browser_available, chromium, free_port

from voicebook.core import scraps
from voicebook.evaluation.listening import results as lr
from voicebook.evaluation.listening import session as ls

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_available() is not None, reason=str(browser_available())),
]
TIMEOUT_MS = 60_000
CANDIDATES = {"cand_zebra": "ckpt_walrus", "cand_okapi": "ckpt_narwhal"}  # label -> run folder
VOICE = "voice_quokka"
SENTENCES = {"s1": "Hol van Budapest?", "s2": "Ki nyert tegnap este"}
# Nothing the browser receives may name these (HTTP bodies, WebSocket frames, decoded audio).
SECRETS = [*CANDIDATES, *CANDIDATES.values(), VOICE, "best_model_12", "samples.csv"]
# Nor, in the widgets' messages and the audio, the hidden reference (JavaScript bundles and the
# kernel's info reply say "reference" for their own reasons, so only widget messages are
# searched for it).
KERNEL_SECRETS = [*SECRETS, "reference"]


def fake_experiment(outputs: Path) -> Path:
    """An evaluated experiment as the panel reads it: two candidates and the hidden real
    recording per sentence, each WAV tagged with what must not reach the page."""
    exp = outputs / "served"
    folder = exp / "eval" / "samples"
    folder.mkdir(parents=True)
    rows = []
    for i, (name, run) in enumerate([*CANDIDATES.items(), ("reference", "dataset")]):
        rate = 22050 if name == "reference" else 24000  # a real clip keeps its own rate
        for j, (sid, text) in enumerate(SENTENCES.items()):
            wav = folder / f"{name}_{VOICE}_{sid}.wav"
            with sf.SoundFile(wav, "w", rate, 1, format="WAV") as f:
                f.title = f"{name} {VOICE}"
                f.comment = f"/runs/{run}/best_model_12.pth"
                f.write(0.1 * np.sin(np.linspace(0, 900 * (i + 1), rate * (1 + i + j) // 2)))
            rows.append([name, sid, text, str(wav.relative_to(exp / "eval"))])
    table = pd.DataFrame(rows, columns=["candidate", "sentence_id", "text", "wav"])
    table.to_csv(exp / "eval" / "samples.csv", index=False)
    return exp


class Server:
    """``voicebook listen`` in its own process group on 127.0.0.1."""

    def __init__(self, outputs: Path, raters: list[str]):
        self.port = free_port()
        cmd = [sys.executable, "-m", "voicebook.cli", "listen", "--experiment", "served",
               "--port", str(self.port), "--raters", *raters]  # fmt: skip
        self.log = outputs / "listen.log"
        env = os.environ | {"VOICEBOOK_OUTPUTS": str(outputs)}
        self.process = subprocess.Popen(
            cmd, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while self.status("/") != 403:  # up: and a page without a token is refused
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"voicebook listen did not start: {self.log.read_text()}")
            time.sleep(0.5)
        printed = self.log.read_text()
        self.links = dict(re.findall(r"^  (\w+): (http://\S+)$", printed, re.MULTILINE))
        assert set(self.links) == set(raters), printed

    def status(self, path: str) -> int | None:
        try:
            return urllib.request.urlopen(self.base + path, timeout=5).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def kernels(self) -> list[int]:
        """The process ids of the kernels this server started."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid), "-f", "ipykernel"],
                             check=False, capture_output=True, text=True).stdout  # fmt: skip
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


class Wire:
    """Every HTTP response body and WebSocket frame a page receives."""

    def __init__(self):
        self.http: list[bytes] = []
        self.frames: list[bytes] = []

    def watch(self, page) -> None:
        page.on("response", self._response)
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _response(self, response) -> None:
        from playwright.sync_api import Error

        try:
            self.http.append(response.body())
        except Error:  # a redirect has no body to read
            self.http.append(response.url.encode())

    def _frame(self, payload) -> None:
        self.frames.append(payload.encode() if isinstance(payload, str) else payload)

    def audio(self) -> list[bytes]:
        """Every WAV the pages received (data URLs inside the widgets' state)."""
        found = re.findall(rb"data:audio/wav;base64,([A-Za-z0-9+/=]+)", b"".join(self.frames))
        return [base64.b64decode(b) for b in found]

    def assert_blind(self) -> None:
        clips = self.audio()
        assert clips, "no audio reached the pages"
        widgets = [f for f in self.frames if re.search(rb'"msg_type":\s*"comm_', f)]
        assert widgets, "no widget message reached the pages"
        for words, blobs in ((SECRETS, [*self.http, *self.frames]),
                             (KERNEL_SECRETS, [*widgets, *clips])):  # fmt: skip
            for word in words:
                found = [re.search(rb"\b" + re.escape(word.encode()) + rb"\b", b.lower())
                         for b in blobs]  # fmt: skip
                hits = [m.string[max(0, m.start() - 150) : m.end() + 60] for m in found if m]
                assert not hits, f"{word!r} reached the browser: {hits[:2]}"
        assert len({c[20:36] for c in clips}) == 1, "the clips' formats differ"  # one rate


class RaterPage:
    """One rater's page, clicked as a person would."""

    def __init__(self, page, url: str):
        self.page, self.url = page, url
        self.open()

    def open(self) -> None:
        self.page.goto(self.url)
        self.root = self.page.locator(".vb-listening")
        self.root.wait_for(timeout=TIMEOUT_MS)

    def expect_text(self, text: str) -> None:
        from playwright.sync_api import expect

        expect(self.root).to_contain_text(text, timeout=TIMEOUT_MS)

    def choose(self, values: dict[str, int]) -> None:
        for scale, value in values.items():
            row = self.root.locator(".widget-toggle-buttons").filter(
                has=self.page.locator(".widget-label", has_text=re.compile(f"^{scale}$"))
            )
            row.get_by_role("button", name=str(value), exact=True).click()

    def save(self) -> None:
        from playwright.sync_api import expect

        button = self.root.get_by_role("button", name="Save and next")
        expect(button).to_be_enabled(timeout=TIMEOUT_MS)
        button.click()


def scores(i: int, rater: str) -> dict[str, int]:
    return {
        "smoothness": 5,
        "naturalness": 6,
        "emotion": 7,
        "overall": 1 + (i * 3 + len(rater)) % 10,
    }


def test_two_raters_rate_at_once_blind_on_the_wire_and_no_rating_is_lost(tmp_path):
    outputs = tmp_path / "outputs"
    exp = fake_experiment(outputs)
    ratings = exp / "ratings.csv"
    server = Server(outputs, ["ann", "bob"])
    wire = Wire()
    try:
        with chromium() as first:
            second = first.context.browser.new_context(viewport={"width": 1280, "height": 900})
            pages = {"ann": first, "bob": second.new_page()}
            for page in pages.values():
                wire.watch(page)
            raters = {name: RaterPage(page, server.links[name]) for name, page in pages.items()}
            total = 3 * len(SENTENCES)
            given = rate_together(raters, total, ratings, server, tmp_path)
            wire.assert_blind()
            not_a_link(first, server)
            second.close()
    finally:
        server.stop()
    on_disk_every_click_once(ratings, given)
    the_report_shows_both_raters(exp, tmp_path)


def rate_together(raters: dict, total: int, ratings: Path, server: Server, tmp: Path) -> dict:
    """Both raters save at the same moment, sample after sample; ann reloads her page after
    two and resumes. Returns what each gave, in order."""
    given: dict[str, list[dict]] = {name: [] for name in raters}
    for i in range(total):
        for name, rater in raters.items():
            rater.expect_text(f"{i} of {total} rated")
            rater.choose(scores(i, name))
        for name, rater in raters.items():  # the two saves go out together
            rater.save()
            given[name].append(scores(i, name))
        for rater in raters.values():
            rater.expect_text(f"{i + 1} of {total} rated" if i + 1 < total else "all 6 rated")
        if i == 1:
            raters["ann"].open()  # a reload: a new kernel, the same rater
            raters["ann"].expect_text(f"Rating as ann. 2 of {total} rated")
            if os.environ.get("VOICEBOOK_SCREENSHOTS"):
                raters["ann"].page.screenshot(
                    path=str(Path(os.environ["VOICEBOOK_SCREENSHOTS"]) / "listen_page.png")
                )
            kernels_are_light(server)
    return given


def kernels_are_light(server: Server) -> None:
    """The raters' kernels hold no torch and stay small."""
    pids = server.kernels()
    assert len(pids) >= 2, pids
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps, f"kernel {pid} loaded torch"
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
        print(f"rater kernel {pid}: {rss / 1024:.0f} MB resident")
        assert rss < 300 * 1024, f"kernel {pid} holds {rss / 1024:.0f} MB"


def not_a_link(page, server: Server) -> None:
    """A wrong or missing token: refused before any kernel starts, no panel, no audio."""
    before = len(server.kernels())
    for query in ("", "?token=wrong", "?token="):
        response = page.goto(server.base + "/" + query)
        assert response.status == 403, query
        assert page.locator(".vb-listening, audio").count() == 0
        assert "data:audio" not in page.content()
    assert len(server.kernels()) <= before


def on_disk_every_click_once(ratings: Path, given: dict[str, list[dict]]) -> None:
    with ratings.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for rater, values in given.items():
        mine = [r for r in rows if r["rater"] == rater]
        assert [{s: int(r[s]) for s in ls.SCALES} for r in mine] == values  # each click, once
        assert len({(r["sentence"], r["candidate"]) for r in mine}) == len(values)
    assert len(rows) == sum(len(v) for v in given.values())


def the_report_shows_both_raters(exp: Path, tmp: Path) -> None:
    """The decision report of the experiment counts the served ratings, per rater."""
    from voicebook.decision import report

    table = pd.DataFrame({"candidate": list(CANDIDATES), "mel_ce": [3.0, 3.1]})
    scraps.publish(exp, "03_evaluation", {"eval_table": table})  # no listening scraps
    path = report.write_report(exp, report.analyse_experiment(exp))
    text = re.sub(r"<[^>]+>", "", path.read_text())
    section = text[text.index("What listeners said") :]
    for rater in ("ann", "bob"):
        assert re.search(rf"\b{rater}\s+{len(SENTENCES)}\s", section), rater  # reference check
    ratings = ls.read_ratings(exp / "ratings.csv")
    kept = lr.screen(ratings)[0]
    for candidate in CANDIDATES:  # n: the ratings that count after the hidden-reference check
        n = int((kept["candidate"] == candidate).sum())
        assert re.search(rf"{candidate}\s+[\d.]+\s+[\d.—]+\s+[\d.—]+\s+{n}\s", section), (
            candidate,
            section,
        )
    json.loads((exp / "decision.json").read_text())  # written beside it
