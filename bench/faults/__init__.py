"""The fault suite of issue 14: real engines, real faults, and what each fault costs.

``python -m bench.faults --short`` (a few runs per fault, a few minutes) or ``--full`` (20 runs per fault). See
:mod:`bench.faults.suite` for how a run goes and :mod:`bench.faults.faults` for the faults.
"""
