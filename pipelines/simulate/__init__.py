"""The handbook's card-transaction simulator (see ``generator``)."""

from pipelines.simulate.generator import COLUMNS, SimulationConfig, TransactionSimulator

__all__ = ["COLUMNS", "SimulationConfig", "TransactionSimulator"]
