"""FAPO training on TRL: configs, data, reward functions, callbacks and the run loop.

TRL's GRPOTrainer owns generation, advantages and the loss (docs/design.md §2); this package adds
only what FAPO needs: the reward functions, the judge wiring, metrics/critique files and resume.
No loss math lives here.
"""
