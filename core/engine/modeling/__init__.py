"""Model code shipped beside every pruned checkpoint (see `modeling_gisp`); import the submodules directly."""
