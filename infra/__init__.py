"""Everything that is not product code: the local stack, emulators, the simulated caller."""
