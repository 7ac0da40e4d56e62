"""fapo: Flawed-Aware Policy Optimization (arXiv 2510.22543) for RL on reasoning LLMs.

The package root imports nothing heavy: `import fapo` and `fapo --help` stay fast, and the
verbs that need no model (verify, judge, eval grm) never pull in torch or transformers.
"""

__version__ = "0.1.0"
