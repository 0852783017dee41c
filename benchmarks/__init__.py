"""gpugrad's benchmark suite: gpugrad beside PyTorch in one process (``python -m benchmarks``).

Modules: ``workloads`` (the programs W1-W4 and the plan of sizes), ``peers`` (the libraries
compared, their clocks and memory probes), ``timing`` (synchronized timing, medians),
``report`` (table, JSON, chart), ``cli`` (the command line). ``demo.py`` is a standalone
training demo. Nothing in ``gpugrad/`` imports this package.
"""
