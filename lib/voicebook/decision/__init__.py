"""The decision stage: the decision matrix over every candidate (``matrix``), fine-tuning against
forgetting (``finetune_compare``) and the report that shows the evidence (``report``)."""
