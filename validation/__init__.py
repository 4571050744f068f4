"""Validation of the installed system: IQ (what is installed), OQ (the cases of
../shared/COMPLIANCE.md run on simulated probes and a driven clock) and the signed pack.

One definition of each OQ case (``oq.CASES``) runs in CI as the project's integration tests
and at a site as ``coldtrail validate oq``.
"""
