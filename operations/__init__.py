"""The plant's operations: releases, the retrain queue and the normal store.

What an operator does to a running plant, used alike by `kenpin-trainer`'s
commands, the retrain service and the console's pages. Torch-free: reading a
release's manifest needs no network.
"""
