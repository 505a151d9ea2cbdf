"""The runner: stage names, parameter routing, skipping, stopping at the failing cell."""

import pytest
from stub_notebooks import write_stub_notebook

from voicebook import cli, runner
from voicebook.core.parameters import declared_parameters
from voicebook.core.scraps import read_experiment
from voicebook.core.values import parse_value
from voicebook.runner import RunnerError, StageFailed, split_params, stage_name

GLUE = (
    "from voicebook.core.scraps import glue\n"
    "glue('{name}', {{'lr': lr, 'experiment': experiment}})\nglue('stage', '{name}')"
)


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    common = "experiment = 'x'\noutputs_dir = ''\nlr = 5e-6\n"
    write_stub_notebook(folder / "01_phase1.ipynb", common, GLUE.format(name="p1"))
    write_stub_notebook(
        folder / "02_phase2.ipynb", common + "resume_from = 'best'\n", GLUE.format(name="p2")
    )
    return folder


def test_stage_names_accept_short_forms():
    assert stage_name("phase2") == stage_name("2") == stage_name("02") == "02_phase2"
    assert stage_name("decision") == "04_decision_matrix" and stage_name("eval") == "03_evaluation"
    assert stage_name("voice") == stage_name("02b") == "02b_voice_search"
    with pytest.raises(RunnerError, match="Unknown stage 'phase'"):  # phase1 or phase2?
        stage_name("phase")
    with pytest.raises(RunnerError, match="Unknown stage 'phase3'"):
        stage_name("phase3")


def test_values_are_typed_like_papermill():
    assert parse_value("1e-6") == 1e-6 and parse_value("3") == 3
    assert parse_value("[1, 2]") == [1, 2] and parse_value("true") is True
    assert parse_value("best") == "best"


def test_one_value_parser_types_like_a_default():
    """The phases' flags, the thresholds and YAML values share one parser (``core.values``)."""
    from voicebook.core.values import like

    assert like(False, "true") is True and like(True, "No") is False and like(False, "0") is False
    assert like(1.0, "2") == 2.0 and isinstance(like(1.0, 2), float)
    assert like(3, "4") == 4 and like(3, 5.0) == 5 and isinstance(like(3, 5.0), int)
    assert like("best", "100") == "100" and like(None, "x") == "x"  # text stays text
    assert like([1], "[2, 3]") == [2, 3]
    from voicebook.core.values import as_structure

    assert as_structure('["a.wav", "b.wav"]') == ["a.wav", "b.wav"]
    assert as_structure('{"label": "x"}') == {"label": "x"} and as_structure("phase1") == "phase1"
    for default, value in [(False, "maybe"), (False, 1.0), (3, "2.5"), (1.0, "low"), (3, True)]:
        with pytest.raises(ValueError, match="lr="):
            like(default, value, "lr")


def test_the_command_has_argparse_subcommands(capsys):
    for argv in ([], ["nope"], ["run"]):  # no command, an unknown one, a missing --experiment
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    assert "--experiment" in capsys.readouterr().err
    args = cli.parser().parse_args(["run", "--experiment", "e", "-p", "lr", "1e-6"])
    assert (args.command, args.experiment, args.param) == (runner.command, "e", [["lr", "1e-6"]])
    assert cli.parser().parse_args(["base"]).base == "tiny"


def test_the_phase_command_line_types_every_flag_like_its_default(capsys):
    import argparse

    from voicebook.training import cli as training_cli

    parser = argparse.ArgumentParser()
    training_cli.add_arguments(parser)
    args = parser.parse_args(["phase2", "--lr", "1e-4", "--lora-train-heads", "yes",
                              "--resume-from", "100", "--epochs", "3"])  # fmt: skip
    assert (args.phase, args.lr, args.lora_train_heads) == ("phase2", 1e-4, True)
    assert (args.resume_from, args.epochs, args.batch_size) == ("100", 3, 3)  # text; a default
    with pytest.raises(SystemExit):
        parser.parse_args(["phase1", "--lora-train-heads", "maybe"])
    assert "lora_train_heads='maybe' is not true or false" in capsys.readouterr().err


def test_parameters_go_to_the_stages_that_declare_them():
    declared = {"01_phase1": {"lr", "epochs"}, "02_phase2": {"lr", "resume_from"}}.__getitem__
    routed = split_params(
        {"lr": 2e-6, "phase2.lr": 1e-6, "resume_from": 1500, "epochs": 30},
        ["01_phase1", "02_phase2"],
        declared,
    )
    assert routed == {
        "01_phase1": {"lr": 2e-6, "epochs": 30},
        "02_phase2": {"lr": 1e-6, "resume_from": 1500},
    }
    nested = split_params({"phase1": {"epochs": 3}}, ["01_phase1", "02_phase2"], declared)
    assert nested == {"01_phase1": {"epochs": 3}, "02_phase2": {}}
    with pytest.raises(RunnerError, match="No selected stage has a parameter 'lr_typo'"):
        split_params({"lr_typo": 1}, ["01_phase1"], declared)
    with pytest.raises(RunnerError, match="Stage 02_phase2 has no parameter 'epochs'"):
        split_params({"phase2.epochs": 1}, ["02_phase2"], declared)


@pytest.mark.slow  # runs notebooks
def test_run_executes_in_order_skips_missing_and_keeps_history(notebooks, tmp_path):
    lines = []
    out = tmp_path / "outputs"
    results = runner.run("exp", None, {"phase2.lr": 1e-6}, out, notebooks, echo=lines.append)
    assert [(r.stage, r.status) for r in results] == [
        ("00_data_prep", "skipped"),
        ("01_phase1", "done"),
        ("02_phase2", "done"),
        ("02b_voice_search", "skipped"),
        ("03_evaluation", "skipped"),
        ("04_decision_matrix", "skipped"),
    ]
    assert lines[0] == "[1/6] 00_data_prep: skipped (00_data_prep.ipynb does not exist yet)"
    assert lines[3].startswith("[3/6] 02_phase2: running with lr=1e-06")
    # the stubs glue names outside the contract, which a checked read refuses: read them plainly
    scraps = {stem: dict(s) for stem, s in read_experiment(out / "exp").items()}
    assert scraps["01_phase1"]["p1"] == {"lr": 5e-6, "experiment": "exp"}
    assert scraps["02_phase2"]["p2"] == {"lr": 1e-6, "experiment": "exp"}
    assert scraps["02_phase2"]["stage"] == "p2"  # plain strings survive the trip
    runner.run("exp", ["phase1"], {}, out, notebooks, echo=lines.append)
    assert len(list((out / "exp" / "notebooks" / "history").glob("01_phase1.*.ipynb"))) == 1


@pytest.mark.slow  # runs a notebook
def test_failing_stage_stops_the_run_and_names_the_cell(notebooks, tmp_path):
    write_stub_notebook(
        notebooks / "01_phase1.ipynb",
        "experiment = 'x'\noutputs_dir = ''\n",
        "raise ValueError('dataset is empty')",
    )
    with pytest.raises(StageFailed) as err:
        runner.run("exp", None, {}, tmp_path / "outputs", notebooks, echo=lambda _: None)
    assert err.value.stage == "01_phase1"
    assert "ValueError: dataset is empty" in str(err.value) and "cell [3]" in str(
        err.value
    )  # after the injected-parameters cell
    assert not (tmp_path / "outputs" / "exp" / "notebooks" / "02_phase2.ipynb").exists()


def test_cli_reports_unknown_parameter_with_exit_code_2(notebooks, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(runner.run, "__defaults__", (None, None, None, notebooks, print))
    code = cli.main(["run", "--experiment", "e", "--outputs-dir", str(tmp_path), "-p", "nope", "1"])
    assert code == 2 and "No selected stage has a parameter 'nope'" in capsys.readouterr().err


def test_every_key_of_the_shipped_parameter_files_is_a_stage_parameter():
    from voicebook.core.paths import NOTEBOOKS_DIR, REPO_ROOT

    files = sorted((REPO_ROOT / "params").glob("*.yaml"))
    assert "my_voice.yaml" in [f.name for f in files]  # the README's example exists

    def declared(stage):
        return declared_parameters(stage, NOTEBOOKS_DIR)

    for file in files:
        raw = runner.load_params_file(file)
        per_stage = split_params(raw, runner.STAGES, declared)  # raises on an unknown key
        assert any(per_stage.values()), file
    my_voice = split_params(runner.load_params_file(REPO_ROOT / "params" / "my_voice.yaml"),
                            runner.STAGES, declared)  # fmt: skip
    assert my_voice["02_phase2"]["lr"] == 1e-6 and my_voice["01_phase1"]["lr"] == 2e-6
    assert my_voice["00_data_prep"]["asr_model"] == my_voice["03_evaluation"]["asr_model"]
