"""failsh: the Tcl policy, the scheduler, the peers, the decision and the procedures."""
