"""`fapo demo`: the whole system end to end on a CPU — testbed data, warm-started tiny policy and
GenRM, GenRM RL, GenRM evaluation, the trained GenRM served by two workers behind the client, GRPO
and FAPO from the same initial policy and seeds, held-out evaluation, and a report.

The demo only orchestrates library calls; every number comes from the real components.
"""
