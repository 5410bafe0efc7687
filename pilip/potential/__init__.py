"""The torch side: data batches, models, losses, training, evaluation, MD, the ASE calculator,
checkpoints, multi-fidelity baselines."""
