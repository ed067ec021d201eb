"""The serving benchmark's floor (``bench/echo_service.py``) is the scoring API without the
work: same service settings, same endpoint style, same declared output type."""

from __future__ import annotations

import inspect

from bench.echo_service import EchoService
from serving.service import FraudScoringService


def test_the_echo_floor_is_configured_and_called_as_the_scoring_api():
    assert EchoService.config == FraudScoringService.config
    echo, scoring = EchoService.apis["score"], FraudScoringService.apis["score"]
    assert inspect.iscoroutinefunction(echo.func) == inspect.iscoroutinefunction(scoring.func)
    assert echo.output_spec.media_type == scoring.output_spec.media_type
    assert echo.input_spec.model_fields.keys() == scoring.input_spec.model_fields.keys()
