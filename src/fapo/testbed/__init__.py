"""The synthetic flawed-reasoning testbed: FAPO's mechanism on a laptop.

Arithmetic word problems whose every step a program can check (`task`, `checker`), solutions with
injected flaws, one of them a real shortcut (`flaws`), data files for policy RL, SFT and GenRM
training/evaluation (`data`), the checker served as a GenRM (`oracle`), the strict answer rule
(`answer`), and tiny models warm-started on the CPU (`warmstart`, measured by `evaluate`).

Entry points used elsewhere:
- `fapo.testbed.answer.is_correct(problem, completion, truncated=False)` / `are_correct(...)`
- `fapo.testbed.oracle.oracle_verdict(problem, steps)` and `OracleBackend` (`fapo serve-grm --oracle testbed`)
- `fapo.testbed.data.generate(out_dir, GenerateConfig(...))` (`fapo testbed generate`)
- `fapo.testbed.warmstart.warmstart(data_dir, out_dir, WarmstartConfig(...))` (`fapo testbed warmstart`)

Nothing outside this package imports it, except by name through the oracle registries. Importing
the package imports no submodule (torch stays unloaded until a warm-start asks for it).
"""
