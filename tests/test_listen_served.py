"""``voicebook listen`` without a browser: tokens, the page a link gets, the server's refusal."""

from __future__ import annotations

import json
import stat
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from voicebook.evaluation.listening import serve
from voicebook.evaluation.listening import session as ls


@pytest.fixture
def experiment(tmp_path):
    exp = tmp_path / "outputs" / "exp"
    (exp / "eval").mkdir(parents=True)
    sf.write(exp / "eval" / "a.wav", 0.1 * np.sin(np.linspace(0, 900, 4000)), 24000)
    pd.DataFrame(
        [["cand_zebra", "s1", "Szia.", "a.wav"], ["cand_okapi", "s1", "Szia.", "a.wav"]],
        columns=["candidate", "sentence_id", "text", "wav"],
    ).to_csv(exp / "eval" / "samples.csv", index=False)
    return exp


def _widgets(root) -> list:
    found = [root]
    for child in getattr(root, "children", ()):
        found += _widgets(child)
    return found


def test_each_rater_keeps_one_secret_token_and_a_wrong_one_names_nobody(experiment):
    tokens = serve.rater_tokens(experiment, ["ann", "bob"])
    assert len(set(tokens.values())) == 2 and all(len(t) >= 24 for t in tokens.values())
    assert serve.rater_tokens(experiment, ["bob", "cy"])["bob"] == tokens["bob"]  # links last
    links = experiment / serve.LINKS_FILE
    assert set(json.loads(links.read_text())) == {"ann", "bob", "cy"}
    assert stat.S_IMODE(links.stat().st_mode) == 0o600
    assert serve.rater_for(f"token={tokens['bob']}", tokens) == "bob"
    for query in ("", "token=", "token=wrong", f"token={tokens['bob']}x", f"t={tokens['bob']}"):
        assert serve.rater_for(query, tokens) is None, query
    with pytest.raises(ValueError, match="rater name"):
        serve.rater_tokens(experiment, ["../x"])
    with pytest.raises(ValueError, match="named twice"):
        serve.rater_tokens(experiment, ["ann", "ann"])


def test_the_server_refuses_a_request_without_a_valid_token(experiment):
    from tornado.web import HTTPError

    hook = serve.refuse_without_token({"ann": "s3cret-token-of-ann-0000"})
    hook(SimpleNamespace(request=SimpleNamespace(query="token=s3cret-token-of-ann-0000")))
    for query in ("", "token=nope"):
        with pytest.raises(HTTPError) as refused:
            hook(SimpleNamespace(request=SimpleNamespace(query=query)))
        assert refused.value.status_code == 403


def test_a_link_gets_its_raters_panel_only_and_a_bad_one_gets_nothing(
    experiment, tmp_path, monkeypatch
):
    tokens = serve.rater_tokens(experiment, ["ann"])
    page = serve.write_page(tmp_path, experiment, tokens)
    monkeypatch.setenv(serve.CONFIG_ENV, str(page.parent / "listen.json"))
    monkeypatch.setenv("QUERY_STRING", "token=wrong")
    refused = serve.rater_page()
    assert "not valid" in refused.value and "audio" not in refused.value
    monkeypatch.setenv("QUERY_STRING", f"token={tokens['ann']}")
    panel = serve.rater_page()
    kinds = {x.__class__.__name__ for x in _widgets(panel)}
    assert "Text" not in kinds  # no name field: the page cannot rate as anyone else
    assert "Rating as <b>ann</b>. 0 of 2 rated" in panel.state.status.value
    sent = json.dumps([x.get_state() for x in _widgets(panel)], default=str)
    assert "cand_" not in sent and "a.wav" not in sent and "data:audio/wav" in sent
    assert ls.read_ratings(experiment / "ratings.csv").empty


def test_listen_refuses_an_unknown_experiment_one_not_evaluated_and_no_raters(
    experiment, monkeypatch, capsys
):
    from voicebook import cli

    monkeypatch.setenv("VOICEBOOK_OUTPUTS", str(experiment.parent))
    assert cli.main(["listen", "--experiment", "nope", "--raters", "ann"]) == 2
    assert "No experiment 'nope'" in capsys.readouterr().err
    assert cli.main(["listen", "--experiment", "exp"]) == 2  # nobody named, no links before
    assert "Name the raters" in capsys.readouterr().err
    (experiment / "eval" / "a.wav").unlink()
    assert cli.main(["listen", "--experiment", "exp", "--raters", "ann"]) == 2
    assert "samples listed in" in capsys.readouterr().err  # said before any page is served
    (experiment / "eval" / "samples.csv").unlink()
    assert cli.main(["listen", "--experiment", "exp", "--raters", "ann"]) == 2
    assert "run 03_evaluation" in capsys.readouterr().err
    assert cli.main(["listen", "--experiment", "exp", "--raters", "a/b"]) == 2


def test_a_sample_that_cannot_be_read_names_no_file_on_a_served_page(experiment):
    from voicebook.evaluation.listening import panel as lp

    samples = ls.load_samples(experiment / "eval")
    served = lp.ListeningPanel(experiment / "ratings.csv", samples, rater="ann")
    (experiment / "eval" / "a.wav").write_bytes(b"not a wav")  # broken after the page opened
    shown = served._player(samples[0], "A").value
    assert "cannot be played" in shown and "a.wav" not in shown and "cand_" not in shown
    in_lab = lp.ListeningPanel(experiment / "ratings.csv", [], rater="")
    with pytest.raises(sf.LibsndfileError):  # in JupyterLab the error names the file
        in_lab._player(samples[0], "A")
