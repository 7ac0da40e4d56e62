"""Thin adapters that let other trainers call fapo's rewards in their own calling conventions.

`fapo.integrations.verl`: reward functions for verl's reward loop (`custom_reward_function`).
Adapters hold no reward or judging logic: they translate arguments and results, and call
`fapo.verify`, `fapo.grm` and `fapo.rewards`. Importing this package imports nothing else.
"""
