"""Studies: thin compositions of the layers below, one module per study."""
