"""Phase 1 and phase 2 fine-tuning: coqui-tts's GPTTrainer under health guards, losing nothing.

One module per concern: ``params`` (the stages' parameters), ``run`` (one phase, see its doc),
``recorder`` (curves, health and status as they happen), ``files`` (a phase's files, archives
and starting checkpoints), ``export`` (a phase's export folder), ``view`` (the charts),
``cli`` (``python -m voicebook.training phase1 --lr ...``). The names below are what the
notebooks, the runner and the tests use.
"""

from voicebook.training.cli import main
from voicebook.training.export import export_phase
from voicebook.training.files import (
    CURVE_COLUMNS,
    archive_previous_run,
    read_curves,
    read_json,
    resolve_init,
    resolve_parent,
    resumable_checkpoints,
    write_json,
)
from voicebook.training.params import (
    STAGES,
    Phase1Config,
    Phase2Config,
    PhaseConfig,
    params_for,
)
from voicebook.training.recorder import PhaseRecorder
from voicebook.training.result import PhaseResult
from voicebook.training.run import FINISHED_STATES, NORM_ONLY_GRAD_CLIP, run_phase
from voicebook.training.select import select_checkpoint
from voicebook.training.view import LiveView, live_view, phase_figure, planned_steps

__all__ = [
    "CURVE_COLUMNS",
    "FINISHED_STATES",
    "NORM_ONLY_GRAD_CLIP",
    "STAGES",
    "LiveView",
    "Phase1Config",
    "Phase2Config",
    "PhaseConfig",
    "PhaseRecorder",
    "PhaseResult",
    "archive_previous_run",
    "export_phase",
    "live_view",
    "main",
    "params_for",
    "phase_figure",
    "planned_steps",
    "read_curves",
    "read_json",
    "resolve_init",
    "resolve_parent",
    "resumable_checkpoints",
    "run_phase",
    "select_checkpoint",
    "write_json",
]
