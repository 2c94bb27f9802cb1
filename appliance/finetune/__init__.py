"""Fine-tuning the SAM decoder on clinicians' decisions (a ``[build]``-extra tool, never runtime).

Only :mod:`appliance.finetune.candidate_set` (numpy) imports without torch; the training,
evaluation and export modules import torch inside their functions. The appliance itself
never imports this package.
"""

__all__: list[str] = []
