"""The evaluation stage: every candidate scored on the same held-out clips (``scoring``), the
per-clip depth (``depth``), DVAE codebook use (``codebook``) and the blind listening test
(``listening``)."""
