"""Differential testing: generated clusters, two proxiers, every flow's outcome compared.

No oracle: the same generated scenario runs on proxier A and on proxier B (one after the
other, identical topologies), each flow's observable outcome is recorded (the endpoints
that answered, refused or silent, the source address the endpoint saw), and where the two
differ the case is shrunk to a minimal scenario file.

One module, one job:

* ``generate`` -- hypothesis strategies for valid cluster states and flows; a case IS a
  scenario document (``harness.scenario`` format), flows with placeholder expectations.
* ``facts`` -- what a flow is about (its source and destination kinds, its Service's
  policies), read back from any scenario document (generated or shrunk).
* ``outcome`` -- probes -> a flow's outcome; two outcomes -> disagreement classes.
* ``declared`` -- differences the two proxiers declare (capabilities, the declared
  differences file): filtered out of the findings, and counted.
* ``shrink`` -- delta debugging over a scenario document's flows and objects.
* ``write`` -- a shrunk case as a scenario file, both outcomes as comments.
* ``run`` -- one document on one proxier (``harness.lifecycle.running_cluster``).
* ``report`` -- the HTML page of a run's disagreements.
* ``__main__`` -- ``python -m harness.diff A B --budget 10m --seed N``.
"""
