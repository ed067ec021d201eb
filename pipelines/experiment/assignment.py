"""Deterministic assignment of customers to the control or the treatment variant.

A customer's bucket is a stable hash of ``"<salt>:<customer_id>"`` mapped to [0, 1); the
customer is in the treatment when the bucket is below the treatment share. Properties:

* stable: the same customer always gets the same variant (every process, every restart, every
  replica; Python's ``hash()`` would not be, it is salted per process);
* a customer, not a transaction, is the unit: one card's transactions are never split between
  two models, so per-customer outcomes (CP@k counts cards) stay attributable;
* growing the share only moves customers from control into the treatment (the buckets do not
  change), and a new salt gives an independent split for the next experiment.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Variant = Literal["control", "treatment"]
CONTROL: Variant = "control"
TREATMENT: Variant = "treatment"
_SCALE = float(2**64)


def bucket(customer_id: int, salt: str) -> float:
    """The customer's position in [0, 1) for this salt (blake2b, 64 bits)."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(customer_id: int, salt: str, treatment_share: float) -> Variant:
    """``treatment`` for the first ``treatment_share`` of the buckets, ``control`` otherwise."""
    return TREATMENT if bucket(customer_id, salt) < treatment_share else CONTROL
