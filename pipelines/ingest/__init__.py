"""Getting transactions into the raw lake: from the simulator, or from a landing folder."""
