"""pytest plugin of the contract-test kit (loaded through the pytest11 entry point)."""
