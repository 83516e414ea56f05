"""Hardware-aware search: evolution (and an NSGA-II front) over the accuracy predictor, under
latency, SRAM, flash and MACs budgets. Torch-free."""
