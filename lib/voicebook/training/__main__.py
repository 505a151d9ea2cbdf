"""``python -m voicebook.training phase1 --lr 1e-4 ...``: one phase from the command line."""

from voicebook.training.cli import main

raise SystemExit(main())
