"""Build the bundled demo corpus in ``data/demo/`` from synthetic speech.

One synthetic speaker (espeak-ng, Hungarian voice) in the two shapes of source that
real users bring to voicebook's data-prep stage:

* ``quiz/`` -- a few long quiz-show recordings (16 kHz mono FLAC) with a same-named
  ``.srt`` subtitle file each. Every sentence is synthesised on its own, trimmed, and
  measured; the recording is the sentences joined by 0.3-0.9 s of silence, and the cue
  times are those measured positions. A faint, seeded noise floor is added.
* ``interview/`` -- short conversational clips (22.05 kHz mono FLAC) listed in
  ``metadata.csv`` (``audio_file|text``), each with 0.2-0.6 s of silence at either end
  and a slightly different level.

The two sources use a different espeak-ng rate and pitch (quiz faster and higher,
interview slower and lower): one voice, two recording conditions. Everything is seeded,
so re-running the script writes identical files.

Usage::

    .venv/bin/python scripts/make_demo_corpus.py --out data/demo
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SEED = 20261121
ESPEAK_SR = 22050  # espeak-ng always synthesises at 22.05 kHz
QUIZ_SR = 16000  # deliberately different from the interview's rate
INTERVIEW_SR = 22050
QUIZ_VOICE = {"rate": 180, "pitch": 58}  # faster and higher: on stage
INTERVIEW_VOICE = {"rate": 155, "pitch": 42}  # slower and lower: sitting and talking
QUIZ_NOISE_DBFS = -58.0  # RMS of the background noise on the quiz recordings
ALLOWED_TEXT = re.compile(r"^[A-Za-zÁÉÍÓÖŐÚÜŰáéíóöőúüű ,.?!]+$")

# Quiz show: one list per recording, one string per subtitle cue. A cue may hold two
# short sentences; each sentence is still synthesised on its own.
QUIZ: list[list[str]] = [
    [
        "Jó estét kívánok, kedves nézők, és üdvözlök mindenkit a Tudás Kapujában!",
        "Ma este három bátor játékos áll a stúdióban.",
        "Kezdjük is az első fordulóval. Figyeljenek jól!",
        "Melyik folyó szeli ketté a fővárost?",
        "Az első lehetőség a Tisza, a második a Duna, a harmadik a Rába.",
        "Anna nyomta meg elsőként a gombot.",
        "A helyes válasz a Duna. Gratulálok!",
        "Ezzel Anna tíz pontot szerzett.",
        "Következzen a második kérdés, amely a történelemhez kapcsolódik.",
        "Ki volt Magyarország első királya?",
        "Gondolkodási idő harminc másodperc.",
        "Letelt az idő, kérem a válaszokat!",
        "Bence szerint Szent László, Anna szerint Szent István.",
        "A helyes válasz Szent István, így Anna ismét pontot kapott.",
        "Bence, ne keseredjen el, még sok kérdés hátravan!",
        "Most jön a gyorsasági kör, ahol minden helyes válasz öt pontot ér.",
        "Hány napból áll egy szökőév?",
        "Háromszázhatvanhat, ez pontosan így van!",
        "Milyen színű a smaragd?",
        "Zöld, tökéletes válasz.",
        "Az első forduló végén Anna vezet huszonöt ponttal.",
        "Rövid szünet következik. Maradjanak velünk!",
    ],
    [
        "Üdvözlöm újra önöket, folytatódik a játék!",
        "A második fordulóban a tét megduplázódik.",
        "Bence, ön választhat témakört elsőként.",
        "A zenét választotta, nagyszerű!",
        "Melyik zeneszerző írta a Magyar rapszódiákat?",
        "Segítségül elárulom, hogy zongoraművész is volt.",
        "Liszt Ferenc, hangzik a válasz. Ez bizony helyes!",
        "Most Péter következik, aki eddig csendben figyelt.",
        "Péter, melyik bolygó van legközelebb a Naphoz?",
        "A Merkúr, mondja Péter határozottan.",
        "A helyes válasz valóban a Merkúr, tíz pont Péternek!",
        "Hány lába van egy póknak?",
        "Bence hatot mondott, de sajnos ez nem talált.",
        "A pókoknak nyolc lábuk van, a rovaroknak hat.",
        "Figyelem, most következik a villámkérdés!",
        "Aki elsőként válaszol helyesen, dupla pontot kap.",
        "Mi a víz kémiai jele?",
        "Anna volt a leggyorsabb. Helyesen válaszolt!",
        "A helyes válasz há kettő ó, vagyis két hidrogén és egy oxigén.",
        "Az állás jelenleg szoros, mindhárom játékos esélyes.",
        "Mielőtt továbblépünk, köszöntsük a közönséget!",
    ],
    [
        "Elérkeztünk a döntőhöz, ahol minden eldől.",
        "A döntőbe Anna és Péter jutott be.",
        "Bence, köszönjük a játékot, szép teljesítmény volt!",
        "A döntőben három kérdés hangzik el, és nincs segítség.",
        "Első kérdés. Melyik Magyarország legnagyobb tava?",
        "A Balaton, felelte Anna, és ez helyes.",
        "Második kérdés. Hány percből áll egy óra?",
        "Péter hatvanat mondott, ez is helyes.",
        "Döntetlen az állás, izgalmas percek következnek!",
        "Harmadik, egyben utolsó kérdés.",
        "Melyik városban található a Hősök tere?",
        "Ki tudja a választ?",
        "Péter egy pillanatig habozott, Anna viszont azonnal megszólalt.",
        "Budapest, ez a helyes válasz!",
        "Anna, ön a mai est győztese!",
        "A fődíj egy hétvégi utazás két személyre.",
        "Köszönjük mindhárom játékosnak a részvételt.",
        "Jövő héten új versenyzőkkel és új kérdésekkel várjuk önöket.",
        "Addig is tanuljanak sokat, és jó éjszakát kívánok!",
    ],
]

# Interview: the same quiz host talking about his work, one string per clip.
INTERVIEW: list[str] = [
    "Hát, ez egy nagyon jó kérdés.",
    "Őszintén szólva, nem is tudom, hol kezdjem.",
    "Gyerekkoromban mindig rádiós szerettem volna lenni.",
    "Az első adásom előtt egész éjjel nem aludtam.",
    "Tudja, mi volt a legnehezebb az elején?",
    "Megtanulni, hogy ne beszéljek túl gyorsan.",
    "A rendező mindig azt mondta, lassíts, fiam, lassíts!",
    "Ma már nevetek rajta, de akkor nagyon izgultam.",
    "Nem, a kérdéseket nem én írom.",
    "Van egy remek szerkesztőcsapatunk, akik hetekig dolgoznak minden adáson.",
    "Minden kérdést legalább kétszer ellenőrzünk.",
    "Előfordult már, hogy hibáztunk?",
    "Sajnos igen, egyszer rossz évszámot olvastam fel.",
    "Másnap rengeteg levelet kaptunk a nézőktől.",
    "A versenyzők általában sokkal idegesebbek, mint gondolnánk.",
    "Én mindig próbálom megnyugtatni őket a felvétel előtt.",
    "Néha elég egy kedves szó vagy egy pohár víz.",
    "Emlékszem egy idős hölgyre, aki mindenkit meglepett.",
    (
        "Nyolcvan évesen szinte minden kérdésre tudta a választ, "
        "és közben végig mosolygott, mintha otthon kártyázna."
    ),
    "Ő volt az egyik kedvenc versenyzőm.",
    "Hogy mit csinálok a szabadidőmben?",
    "Sokat kirándulok, főleg a Bükkben.",
    "A feleségemmel minden hétvégén elindulunk valahová.",
    "Olvasni is nagyon szeretek, főleg történelmi regényeket.",
    "Nem, a válaszokat nem tudom fejből.",
    "Előttem mindig ott van a kártya a helyes megoldással.",
    "Szerintem a tudás mellett a szerencse is számít.",
    "Egy jó kérdés mindig tanít valamit.",
    "Ha a néző otthon is elgondolkodik, akkor már megérte.",
    "Mi a titka egy jó műsorvezetőnek?",
    "Azt hiszem, a figyelem és a türelem.",
    "Aki csak magára figyel, az nem tud jól kérdezni.",
    (
        "A közönséget minden adásban tisztelni kell, "
        "akkor is, ha fáradt vagy, vagy ha rossz napod volt."
    ),
    "Hiányzik néha a rádió?",
    "Igen, bevallom, nagyon.",
    "A rádióban csak a hang számít, nincs smink, nincs díszlet.",
    "Ott mindent a hangoddal kell elmondanod.",
    "A televízió egészen más világ.",
    "Eleinte azt sem tudtam, hová nézzek.",
    "A kamerák piros lámpái teljesen összezavartak.",
    "Meddig szeretném még csinálni?",
    "Amíg élvezem, és amíg a nézők is szeretik.",
    "Sőt, már egy új műsoron is gondolkodom.",
    "Erről sajnos még nem beszélhetek részletesen.",
    "Annyit elárulhatok, hogy gyerekeknek szól majd, sok zenével, játékkal és meglepetéssel.",
    "Szerintem a gyerekek a legőszintébb közönség.",
    "Ha unatkoznak, azonnal megmondják.",
    "Egy felvétel előtt mindig iszom egy csésze teát, és hangosan elolvasom az összes kérdést.",
    "Köszönöm szépen a beszélgetést, igazán jólesett.",
    "Remélem, hamarosan újra találkozunk.",
]


def split_sentences(text: str) -> list[str]:
    """Split a cue or clip text into its sentences (after . ? or !)."""
    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s]


def check_texts() -> list[str]:
    """Check the character set and that no sentence repeats; return all sentences."""
    texts = [cue for episode in QUIZ for cue in episode] + INTERVIEW
    sentences = [s for text in texts for s in split_sentences(text)]
    for s in sentences:
        if not ALLOWED_TEXT.match(s):
            raise ValueError(f"sentence has characters outside the allowed set: {s!r}")
    seen: set[str] = set()
    for s in sentences:
        if s in seen:
            raise ValueError(f"sentence appears twice: {s!r}")
        seen.add(s)
    return sentences


def synthesize(text: str, rate: int, pitch: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng's Hungarian voice; float32 samples at 22.05 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", "hu", "-s", str(rate), "-p", str(pitch), "-w", str(wav_path)]
        subprocess.run([*cmd, text], check=True, capture_output=True)
        with wave.open(str(wav_path), "rb") as w:
            if w.getframerate() != ESPEAK_SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise RuntimeError(f"unexpected espeak-ng output format for {text!r}")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def trim(audio: np.ndarray, sr: int, threshold: float = 0.01, margin_s: float = 0.01) -> np.ndarray:
    """Cut espeak-ng's own leading/trailing silence, keeping a few ms of margin."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        raise RuntimeError("synthesised audio is silent")
    margin = int(margin_s * sr)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


def speak_sentence(text: str, voice: dict[str, int], sr: int) -> np.ndarray:
    """Synthesise one sentence, trim it, and resample it to ``sr``."""
    audio = trim(synthesize(text, voice["rate"], voice["pitch"]), ESPEAK_SR)
    if sr != ESPEAK_SR:
        g = np.gcd(sr, ESPEAK_SR)
        audio = resample_poly(audio, sr // g, ESPEAK_SR // g).astype(np.float32)
    return audio


def silence(seconds: float, sr: int) -> np.ndarray:
    return np.zeros(round(seconds * sr), dtype=np.float32)


def srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def normalize_peak(audio: np.ndarray, peak: float) -> np.ndarray:
    """Scale ``audio`` so that its absolute peak is ``peak`` (of full scale)."""
    return (audio * (peak / float(np.max(np.abs(audio))))).astype(np.float32)


def make_quiz_recording(cues: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Build one long recording and its SRT text from a list of cue texts."""
    sr = QUIZ_SR
    parts: list[np.ndarray] = [silence(rng.uniform(0.4, 0.8), sr)]
    pos = len(parts[0])
    spans: list[tuple[int, int, str]] = []
    for i, cue in enumerate(cues):
        if i > 0:
            gap = silence(rng.uniform(0.3, 0.9), sr)
            parts.append(gap)
            pos += len(gap)
        start = pos
        for j, sentence in enumerate(split_sentences(cue)):
            if j > 0:  # two short sentences in one cue: a short breath between them
                gap = silence(rng.uniform(0.3, 0.45), sr)
                parts.append(gap)
                pos += len(gap)
            audio = speak_sentence(sentence, QUIZ_VOICE, sr)
            parts.append(audio)
            pos += len(audio)
        spans.append((start, pos, cue))
    parts.append(silence(rng.uniform(0.5, 1.0), sr))
    audio = normalize_peak(np.concatenate(parts), peak=0.7)
    noise_rms = 10 ** (QUIZ_NOISE_DBFS / 20)
    audio = audio + rng.normal(0.0, noise_rms, size=audio.shape).astype(np.float32)
    srt = "\n".join(
        f"{n}\n{srt_time(a / sr)} --> {srt_time(b / sr)}\n{text}\n"
        for n, (a, b, text) in enumerate(spans, start=1)
    )
    return audio, srt


def make_interview_clip(text: str, rng: np.random.Generator) -> np.ndarray:
    """One clip: the whole text in one go, 0.2-0.6 s silence either end, varied level."""
    sr = INTERVIEW_SR
    speech = speak_sentence(text, INTERVIEW_VOICE, sr)
    speech = normalize_peak(speech, peak=rng.uniform(0.35, 0.85))
    lead, tail = silence(rng.uniform(0.2, 0.6), sr), silence(rng.uniform(0.2, 0.6), sr)
    return np.concatenate([lead, speech, tail])


def write_flac(path: Path, audio: np.ndarray, sr: int) -> None:
    sf.write(path, np.clip(audio, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")


def remove_stale(folder: Path, *patterns: str) -> None:
    """Delete files an earlier run generated, so a shorter sentence list leaves none behind."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder")
    args = parser.parse_args(argv)

    sentences = check_texts()
    rng = np.random.default_rng(SEED)

    quiz_dir = args.out / "quiz"
    quiz_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(quiz_dir, "quiz_*.flac", "quiz_*.srt")
    quiz_seconds = 0.0
    for k, cues in enumerate(QUIZ, start=1):
        audio, srt = make_quiz_recording(cues, rng)
        write_flac(quiz_dir / f"quiz_{k:02d}.flac", audio, QUIZ_SR)
        (quiz_dir / f"quiz_{k:02d}.srt").write_text(srt, encoding="utf-8")
        quiz_seconds += len(audio) / QUIZ_SR

    interview_dir = args.out / "interview"
    interview_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(interview_dir, "interview_*.flac")
    rows = ["audio_file|text"]
    interview_seconds = 0.0
    for k, text in enumerate(INTERVIEW, start=1):
        name = f"interview_{k:03d}.flac"
        audio = make_interview_clip(text, rng)
        write_flac(interview_dir / name, audio, INTERVIEW_SR)
        rows.append(f"{name}|{text}")
        interview_seconds += len(audio) / INTERVIEW_SR
    (interview_dir / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    print(
        f"{len(sentences)} sentences; quiz: {len(QUIZ)} recordings, {quiz_seconds:.1f} s; "
        f"interview: {len(INTERVIEW)} clips, {interview_seconds:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
