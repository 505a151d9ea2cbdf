"""Test-wide set-up: every test writes experiments to a temporary outputs folder, never to a
person's ``outputs/`` (notebook kernels started by nbmake inherit this environment)."""

import os
import tempfile

os.environ.setdefault("VOICEBOOK_OUTPUTS", tempfile.mkdtemp(prefix="voicebook-test-outputs-"))
