"""Fault campaign (issue 13): inject real faults into the whole DAG and count what survived.

    bash scripts/setup.sh && .venv/bin/python -m tools.fault_campaign

runs, on the tiny test config (tests/e2e/config.yaml) with real Psi4, in a scratch folder:

0. one uninterrupted run of the DAG: the reference every other run is compared with;
1. kills: chains of runs, each killed with ``kill -9`` of Snakemake's whole process group at a
   seeded random moment of a target stage (sampling, labelling, collecting, training,
   evaluation, MD), then ``--unlock`` + ``--rerun-incomplete`` until the DAG completes;
   compared with the uninterrupted run: finished geometries recomputed, label energies
   bitwise equal, model metrics equal, corrupt or partial files left, wall time lost per kill;
2. a full disk: labelling and training on a small tmpfs (mounted here, always unmounted),
   filled so that a write fails with ENOSPC mid-run, and labelling with Psi4's scratch files
   there too at eight fill levels; then space freed and the stage resumed;
3. damaged files: truncated and bit-flipped Parquet tables (bits anywhere, and bits in the
   footer, which no page CRC covers), a results JSONL cut mid-line, a
   checkpoint cut short, a config with a wrong type in every section, each fed to the pilip
   command that reads it;
4. quantum chemistry that misbehaves: SCF non-convergence on a fraction of geometries, a
   geometry that hangs past the per-geometry timeout, the Psi4 worker killed mid-chunk (all in
   one DAG run), then ``pilip label --retry-failed``; and the Psi4 interpreter missing;
5. untrusted names (system, reference, variant) with spaces, quotes, ``;``, ``$()``, ``../``.

Prints a JSON record of every figure and writes it to ``<work>/campaign.json``; the figures in
docs/reliability.md come from one such run. Needs root only for the tmpfs (part 2 is skipped
with a reason otherwise). On 2 cores the default settings take about 8 minutes.

Modules, by concern: ``common`` (paths, stages, running commands, judging a refusal),
``processes`` (Snakemake's process tree, ``kill -9``), ``dag`` (a DAG run killed at seeded
moments), ``compare`` (a run against the uninterrupted one, files that do not read back),
one module per part (``kills``, ``disk``, ``damaged``, ``qc``, ``names``), ``report`` (the
Markdown tables) and ``__main__`` (the command). ``tests/integration/test_fault_campaign.py``
runs its fast parts.
"""
