"""Schemas of the files the tool reads (pydantic), and one way to report a file that breaks one.

Each file kind declares its schema next to its reader (lookup_tables.schema, search.result);
what they share is here: finite numbers and a one-line error that names the file, the field,
what is wrong and how to get a good file. Unknown keys are kept (newer files, extras)."""
from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def _finite_non_negative(v: float) -> float:
    if not math.isfinite(v) or v < 0:
        raise ValueError("must be a finite number, not negative")
    return v


Finite = Annotated[float, AfterValidator(_finite)]
FiniteNonNegative = Annotated[float, AfterValidator(_finite_non_negative)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonEmpty = Annotated[str, Field(min_length=1)]


class Open(BaseModel):
    """A record that keeps keys it does not name, and takes each value as the type it is
    (strict: "8" is no integer and true no number; the file is used as read, not converted)."""
    model_config = ConfigDict(extra="allow", strict=True)


def validate(schema: type[BaseModel], data, path, what: str, fix: str, error: type[UserError] = UserError):
    """The `schema` model of `data` (the JSON of the file at `path`, a `what`); else raise
    `error` naming the first field that breaks `schema`, and `fix`, how to get a good one."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the top level"
        got = "" if err["type"] == "missing" else f" (got {str(err.get('input'))[:60]!r})"
        msg = err["msg"].removeprefix("Value error, ")
        raise error(f"{path} is not a valid {what}: {where}: {msg}{got}; {fix}") from None
