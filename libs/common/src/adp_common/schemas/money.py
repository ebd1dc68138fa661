"""Money: a Decimal amount in USD that serializes as a fixed-point decimal string ("0.000000000", never
"0E-9" or a float). Every amount in the platform's messages and replies uses `Money`; every program that
prints an amount uses `format_money`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

MONEY_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def format_money(amount: Decimal | int | str) -> str:
    """Fixed-point notation of an amount, keeping its precision (Decimal's str() switches to exponents)."""
    return format(Decimal(amount), "f")


Money = Annotated[
    Decimal,
    PlainSerializer(format_money, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["0.000000000"]}, mode="serialization"),
]


def money_input(maximum: int) -> WithJsonSchema:
    """The JSON schema of a non-negative amount a client sends: a number, or a decimal string (no exponent)."""
    digits = len(str(maximum)) - 1
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": maximum},
                {"type": "string", "pattern": rf"^[0-9]{{1,{digits}}}(\.[0-9]{{1,9}})?$"},
            ]
        },
        mode="validation",
    )
